"""docs/metrics.md is generated from the code; these tests fail when the two disagree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.observability import metrics_doc
from gateway.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"


def test_the_doc_is_what_the_generator_renders():
    assert DOC.read_text() == metrics_doc.render(), (
        "docs/metrics.md is stale: run `python -m gateway.observability.metrics_doc > docs/metrics.md`"
    )


def test_the_generator_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "gateway.observability.metrics_doc"], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=30)
    assert out.stdout == DOC.read_text()


def test_every_metric_and_every_label_is_documented():
    text = DOC.read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    for m in Metrics().catalog:
        assert m.name in rows, m.name
        for label in m.labels:
            assert f"`{label}`" in rows[m.name], (m.name, label)
            assert label in rows, f"label {label} has no row in the label-values table"
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in rows, name
