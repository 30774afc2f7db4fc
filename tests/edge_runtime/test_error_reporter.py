"""Errors are rate-limited on the wire and never silently dropped: what the limit holds back is counted."""

from __future__ import annotations

import json

from edge_runtime.error_reporter import ErrorReporter


def test_burst_is_limited_and_the_rest_counted(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("edge_runtime.error_reporter.time.monotonic", lambda: clock[0])
    sent: list[dict] = []
    reporter = ErrorReporter(lambda payload: sent.append(json.loads(payload)), per_second=2, device_id="d")
    for index in range(10):
        reporter.report("malformed_json", f"message {index}", model="m", source="mqtt")
    assert len(sent) == 2 and reporter.suppressed == 8
    clock[0] += 1.0  # one second later: two more tokens
    reporter.report("non_finite", "NaN in channel 3", model="m")
    assert sent[-1]["reason"] == "non_finite" and sent[-1]["suppressed_before"] == 8
    assert reporter.suppressed == 0 and reporter.reported == 3
    assert {"ts", "device_id", "reason", "detail", "model"} <= set(sent[-1])
