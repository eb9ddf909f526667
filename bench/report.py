"""The results of one run: sections of rows, the targets, and their JSON and markdown forms."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Section:
    """One scenario's table. ``skipped`` or ``failed`` says why it has no rows."""

    key: str
    title: str
    columns: tuple[tuple[str, str], ...]  # (row field, column header)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    failed: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None and (self.skipped is not None or bool(self.rows))


@dataclass(frozen=True)
class TargetCheck:
    name: str
    value: float | None
    threshold: float
    unit: str
    higher_is_better: bool
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Report:
    meta: dict[str, Any]
    sections: list[Section] = field(default_factory=list)
    targets: list[TargetCheck] = field(default_factory=list)

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sections)

    def as_json(self) -> bytes:
        data = {
            **self.meta,
            "ok": self.ok,
            "sections": [asdict(s) for s in self.sections],
            "targets": [{**asdict(t), "passed": t.passed} for t in self.targets],
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2)

    def as_markdown(self) -> str:
        m = self.meta
        machine = m["machine"]
        lines = [
            f"# Benchmark: {m['mode']} run, {m['date']}",
            "",
            *([f"- Measured: {m['label']}"] if m.get("label") else []),
            f"- Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), load average {machine['load_average_1m']} "
            f"at start and {machine.get('load_average_1m_at_end', '-')} at end, Python {machine['python']}, {machine['platform']}, commit {machine['commit']}",
            f"- Method: {m['method']['summary']}",
            f"- Load tool: {m['method']['load_tool']}",
            "",
        ]
        for s in self.sections:
            lines += _section_markdown(s)
        if self.targets:
            lines += ["## Targets (issue 8)", "", "| target | value | threshold | result |", "|---|---|---|---|"]
            for t in self.targets:
                sign = ">=" if t.higher_is_better else "<="
                value = "-" if t.value is None else f"{_fmt(t.value)} {t.unit}"
                result = t.verdict() + (f" ({t.note})" if t.note else "")
                lines.append(f"| {t.name} | {value} | {sign} {_fmt(t.threshold)} {t.unit} | {result} |")
            lines.append("")
        return "\n".join(lines)

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "latest.json", directory / "latest.md"
        json_path.write_bytes(self.as_json() + b"\n")
        md_path.write_text(self.as_markdown())
        return json_path, md_path


def _section_markdown(s: Section) -> list[str]:
    lines = [f"## {s.title}", ""]
    if s.failed:
        lines += [f"**Harness failure:** {s.failed}", ""]
    elif s.skipped:
        lines += [f"Not measured: {s.skipped}", ""]
    if s.rows:
        lines.append("| " + " | ".join(header for _, header in s.columns) + " |")
        lines.append("|" + "---|" * len(s.columns))
        for row in s.rows:
            lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in s.columns) + " |")
        lines.append("")
    lines += [f"- {note}" for note in s.notes]
    if s.notes:
        lines.append("")
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return str(value)
