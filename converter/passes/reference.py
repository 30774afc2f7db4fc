"""Reference statistics: what the final model's inputs and outputs look like on the data it was made for, stored
in the bundle so the device can tell when its stream drifts away from it (see converter/reference.py)."""

from __future__ import annotations

from typing import Any

from converter.conversion import Conversion
from converter.reference import reference_statistics


def reference_pass(conversion: Conversion[Any]) -> None:
    data, report = conversion.data, conversion.report
    source = data.calibration or data.verify
    final = conversion.stages[report.final_stage].model
    scores = conversion.run(final, source, "reference statistics")[conversion.output_name]
    conversion.reference = reference_statistics(
        source, scores, conversion.card, classification=conversion.classification
    )
    report.passes["reference"] = "ran"
    if data.calibration is None:
        report.notes.append("reference statistics taken from the --eval data (no --calibration given)")
