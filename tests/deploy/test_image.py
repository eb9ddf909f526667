"""The install the Dockerfile performs, done in a clean venv, and `gateway serve` started from it.

No container engine is needed: the builder stage's COPY and RUN steps are read
from the Dockerfile and replayed in a temporary directory, so the test follows
the Dockerfile when it changes. pip's own cache is unavailable on these
machines, so the wheels are kept in a wheelhouse under pytest's cache
(``.pytest_cache``): the install runs offline from it, and only when that fails
(first run, new dependencies, or a wheelhouse older than a week) does pip
download the dependencies (and the build backend) into it from the configured
indexes. That first run takes one to three minutes, network-bound, hence this
module's own timeout; later runs take seconds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.deploy.chart import ROOT
from tests.deploy.test_dockerfile import stages
from tests.support.gateway_proc import GatewayProcess
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(600)


def _builder_steps() -> tuple[list[str], list[list[str]]]:
    """The builder stage's build inputs and its pip commands."""
    sources: list[str] = []
    commands: list[list[str]] = []
    for cmd, args in stages()[0]:
        if cmd == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
        elif cmd == "RUN" and "pip " in args:
            for part in args.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "pip":
                    commands.append(words)
    assert sources and commands, "the builder stage should COPY the sources and pip install them"
    return sources, commands


WHEELHOUSE_MAX_AGE_S = 7 * 86400


def _pip(venv: Path, args: list[str], cwd: Path, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args, "--disable-pip-version-check"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _fill_wheelhouse(venv: Path, src: Path, wheelhouse: Path, install: list[str]) -> None:
    """Download what ``pip install ARGS`` needs, and the build backend, into the wheelhouse."""
    build_requires = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]["requires"]
    targets = [w for w in install if not w.startswith("-")]
    result = _pip(venv, ["download", "-d", str(wheelhouse), *targets, *build_requires], src)
    assert result.returncode == 0, f"pip download failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (wheelhouse / "stamp").touch()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    root = tmp_path_factory.mktemp("image")
    src = root / "src"
    src.mkdir()
    sources, commands = _builder_steps()
    for name in sources:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    wheelhouse = Path(cache.mkdir("image-wheelhouse")) if cache is not None else root / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    stamp = wheelhouse / "stamp"
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < WHEELHOUSE_MAX_AGE_S
    for words in commands:
        # The image's own pip command, minus --no-cache-dir (which only keeps the image small).
        args = [w for w in words[1:] if w != "--no-cache-dir"]
        if args[0] == "install":
            offline = [*args, "--no-index", "--find-links", str(wheelhouse)]
            result = _pip(venv, offline, src) if fresh else None
            if result is None or result.returncode != 0:
                _fill_wheelhouse(venv, src, wheelhouse, args[1:])
                result = _pip(venv, offline, src)
        else:
            result = _pip(venv, args, src)
        assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return venv


def test_the_package_is_installed_in_the_venv_not_taken_from_the_repo(venv: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(venv)
    assert (venv / "bin" / "gateway").exists(), "the console script the image's ENTRYPOINT runs"


def test_gateway_serve_from_the_venv_answers(venv: Path, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    app = tmp_path / "app"  # like the image's WORKDIR: nothing of the repository in sight
    app.mkdir()
    try:
        # As `docker run -e REDIS_URL=... gateway`: the embedded default config, Redis from the env.
        gw = GatewayProcess(app, None, launcher=(str(venv / "bin" / "gateway"),), cwd=app,
                            args=("--host", "127.0.0.1"),
                            env={"REDIS_URL": redis.url, "PYTHONPATH": ""}).start()
        try:
            assert httpx.get(gw.url + "/healthz", timeout=5).json() == {"status": "ok"}
            ready = httpx.get(gw.url + "/readyz", timeout=5)
            assert ready.status_code == 200 and ready.json()["redis"] == "ok", ready.text
            models = httpx.get(gw.url + "/v1/models", timeout=5).json()
            assert "sim-1" in [m["id"] for m in models["data"]]
            answer = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                                json={"model": "sim-1", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
        finally:
            # uvicorn ends a graceful shutdown by re-raising SIGTERM on itself.
            assert gw.stop() in (0, -signal.SIGTERM), gw.log()
    finally:
        redis.stop()
