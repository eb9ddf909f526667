"""Every Redis key the gateway uses, in one place.

All keys share the hash tag ``{gw}`` (or ``{<namespace>}``), so the Lua scripts
that touch a job, its stream and the dead-letter stream at once work on Redis
Cluster: the tag pins them to one slot. Every key has a TTL or an owner that
deletes it: job hashes expire after their result TTL, stream entries are
deleted on completion, buckets and mode records carry TTLs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "gw"
    group: str = "drainers"  # the one consumer group every drainer joins
    @property
    def tag(self) -> str:
        return "{" + self.namespace + "}"

    def stream(self, tier: str) -> str:
        """One stream per tier; entries carry only the job id."""
        return f"{self.tag}:stream:{tier}"

    def job(self, job_id: str) -> str:
        """A hash with the job's request, state and result."""
        return f"{self.tag}:job:{job_id}"

    @property
    def dead(self) -> str:
        """Dead letters: jobs that failed ``max_attempts`` times (capped length)."""
        return f"{self.tag}:dead"

    @property
    def done_channel(self) -> str:
        """Pub/sub channel announcing each job that reached a terminal state."""
        return f"{self.tag}:done"

    def bucket(self, provider: str, kind: str) -> str:
        """The drain envelope's token bucket for a provider (``rpm`` or ``tpm``)."""
        return f"{self.tag}:bucket:{provider}:{kind}"

    def health_slice(self, scope: str, second: int) -> str:
        """One second of summed upstream outcomes for a provider or target (expires after the window)."""
        return f"{self.tag}:health:{scope}:{second}"

    @property
    def mode_auto(self) -> str:
        """The automatic controller's state per scope (owned by the lease holder)."""
        return f"{self.tag}:mode:auto"

    def mode_override(self, scope: str) -> str:
        """An operator override; its TTL is the override's TTL, and clearing deletes it."""
        return f"{self.tag}:mode:override:{scope}"

    @property
    def mode_leader(self) -> str:
        """The lease naming the replica that evaluates automatic transitions."""
        return f"{self.tag}:mode:leader"

    @property
    def mode_channel(self) -> str:
        return f"{self.tag}:mode:changed"

    @property
    def audit(self) -> str:
        """Mode transitions and operator actions (capped length)."""
        return f"{self.tag}:audit"

    def staging(self, group: str) -> str:
        """Jobs waiting to be packed into one provider batch (sorted by enqueue time; owned by the batcher)."""
        return f"{self.tag}:staging:{group}"

    @property
    def staging_groups(self) -> str:
        """The (provider, model, route) groups that have staged jobs."""
        return f"{self.tag}:staging:groups"

    def provider_batch(self, batch_key: str) -> str:
        """A submitted provider batch: its provider, model, job ids and poll schedule (deleted when done)."""
        return f"{self.tag}:pbatch:{batch_key}"

    @property
    def provider_batches(self) -> str:
        """The set of submitted provider batches not yet finished."""
        return f"{self.tag}:pbatches"

    def lease(self, name: str) -> str:
        """A short lease (SET NX PX) so one replica at a time does ``name``."""
        return f"{self.tag}:lease:{name}"

    def file(self, file_id: str) -> str:
        """A stored file's metadata (its bytes are in the file store's directory); expires with the file."""
        return f"{self.tag}:file:{file_id}"

    def client_files(self, client: str) -> str:
        """A client's file ids, ordered by id (ids sort by creation); lives as long as its newest file."""
        return f"{self.tag}:files:client:{client}"

    def client_batch(self, batch_id: str) -> str:
        """A client-facing batch (Batch API): its object, counters and leases; expires after its files."""
        return f"{self.tag}:cbatch:{batch_id}"

    def client_batch_ids(self, batch_id: str) -> str:
        """The batch's custom_ids in input order (line i is job ``batch_job_id(batch, i)``); expires with it."""
        return f"{self.tag}:cbatch:{batch_id}:ids"

    def client_batch_results(self, batch_id: str) -> str:
        """Output lines by job id until the batch is finalized (then deleted; else expires with it)."""
        return f"{self.tag}:cbatch:{batch_id}:results"

    def client_batches(self, client: str) -> str:
        """A client's batch ids, ordered by id; lives as long as its newest batch."""
        return f"{self.tag}:cbatches:client:{client}"

    @property
    def open_client_batches(self) -> str:
        """Batches not yet final, for the sweep; the sweep removes each once it is final or gone."""
        return f"{self.tag}:cbatches:open"

    def global_cap(self, provider: str) -> str:
        """Leases on a provider's global concurrency cap (each lease expires on its own)."""
        return f"{self.tag}:cap:{provider}"

    def client_bucket(self, client: str, kind: str) -> str:
        """A client's own rate bucket (``rpm`` or ``tpm``); expires when idle."""
        return f"{self.tag}:client:{client}:{kind}"

    def client_inflight(self, client: str) -> str:
        """Leases on a client's in-flight requests (each expires on its own)."""
        return f"{self.tag}:client:{client}:inflight"
