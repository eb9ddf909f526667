"""Sampling a live process with py-spy, and reading the samples back per function.

py-spy records in its raw (collapsed stack) format: one line per distinct stack,
``frame;frame;...;leaf COUNT``. ``Samples`` folds those per function (line
numbers dropped): *self* counts the samples where the function was running,
*total* those where it was anywhere on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


class PySpy:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    @classmethod
    def find(cls) -> PySpy | None:
        binary = shutil.which("py-spy")
        return cls(binary) if binary else None

    def record(self, pid: int, seconds: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
        """Start sampling ``pid`` for ``seconds`` without pausing it; the caller waits on the process."""
        argv = [self.binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
                "--nonblocking", "--format", "raw", "--output", str(out)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def function_of(frame: str) -> str:
    """``qualname (path:line)`` without the line."""
    return _LINE.sub(")", frame.strip())


@dataclass
class Samples:
    total: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, collapsed: Path) -> Samples:
        samples = cls()
        for line in collapsed.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [function_of(f) for f in stack.split(";") if f.strip()]
            if not frames or not count.isdigit():
                continue
            n = int(count)
            samples.total += n
            samples.self_counts[frames[-1]] += n
            for name in set(frames):
                samples.total_counts[name] += n
        return samples

    def per_request_us(self, counts: Counter[str], rate: int, requests: int) -> dict[str, float]:
        """Sampled microseconds per request, by function."""
        scale = 1e6 / rate / max(requests, 1)
        return {name: n * scale for name, n in counts.items()}
