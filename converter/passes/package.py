"""Package: the one step that writes a bundle, for ONNX and TFLite alike; it runs only after the gate passed, so a
refused conversion leaves nothing behind (and the write itself is atomic: see converter/package.py)."""

from __future__ import annotations

from typing import Any

from converter.conversion import Conversion
from converter.package import BundleContents, write_model_bundle


def package_pass(conversion: Conversion[Any]) -> None:
    options, card, engine, report = conversion.options, conversion.card, conversion.engine, conversion.report
    final = conversion.stages[report.final_stage]
    golden_inputs = conversion.data.verify.golden()
    inputs, outputs = engine.tensors(final.model)
    contents = BundleContents(
        name=card.name if card else options.model.stem,
        version=card.version if card else "1",
        model_bytes=engine.payload(final.model),
        model_format=engine.format,
        precision=final.precision,
        inputs=inputs,
        outputs=outputs,
        golden_inputs=golden_inputs,
        golden_outputs=engine.golden(final.model, golden_inputs),
        verification=report.as_dict(),
        reference=conversion.reference,
        accelerated=conversion.accelerated,
    )
    conversion.manifest = write_model_bundle(options.output, contents, conversion.board, card, options.sign_key)
