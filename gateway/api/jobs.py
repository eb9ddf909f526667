"""The jobs API: fetch a deferred job (optionally waiting for it), or cancel it before dispatch."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import Gateway
from gateway.errors import InvalidRequest, JobConflict, NotFound
from gateway.queue.job import Job

MAX_WAIT_S = 60.0


def routes(gw: Gateway) -> list[Route]:
    async def owned(request: Request) -> Job:
        peer = request.client.host if request.client else None
        client = gw.auth.client(request.headers.get("authorization"), peer)
        assert gw.store is not None
        job = await gw.store.get(request.path_params["job_id"])
        if job is None or job.client != client.name:
            # Another client's job is indistinguishable from a job that does not exist.
            raise NotFound("No such job.", code="job_not_found")
        return job

    async def get_job(request: Request) -> Response:
        wait = request.query_params.get("wait")
        seconds = 0.0
        if wait is not None:
            # Checked whatever the job's state, so a bad value is never accepted just because the job is done.
            try:
                seconds = float(wait)
            except ValueError:
                raise InvalidRequest("wait must be a number of seconds.", param="wait") from None
            if not seconds >= 0:  # also refuses nan, which would never time out
                raise InvalidRequest("wait must be a non-negative number of seconds.", param="wait")
        job = await owned(request)
        if wait is not None and not job.status.terminal:
            assert gw.notifier is not None and gw.store is not None
            job = await gw.notifier.wait(gw.store, job.id, min(seconds, MAX_WAIT_S)) or job
        return Response(orjson.dumps(job.to_object()), media_type="application/json")

    async def cancel_job(request: Request) -> Response:
        job = await owned(request)
        assert gw.store is not None
        status = await gw.store.cancel(job.id, job.tier)
        if status != "cancelled":
            raise JobConflict(f"The job is {status}; only a queued job can be cancelled.")
        job = await gw.store.get(job.id) or job
        return Response(orjson.dumps(job.to_object()), media_type="application/json")

    return [
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    ]
