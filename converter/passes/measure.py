"""Measure: batch-1 latency of every stage on this host, so the report can say what each pass bought.

Switched off by --no-latency (it is the slowest part of a small model's conversion), not by --skip: it changes
nothing in the bundle but the report's latency column.
"""

from __future__ import annotations

from typing import Any

from converter.conversion import Conversion


def measure_pass(conversion: Conversion[Any]) -> None:
    if not conversion.options.measure_latency:
        return
    report = conversion.report
    models = {name: stage.model for name, stage in conversion.stages.items()}
    latencies, where = conversion.engine.measure(models, conversion.data.verify.first(), report.host)
    for row in report.stages:
        row.latency_ms = round(latencies[row.stage], 4)
    report.latency_measured_on = where
