"""Loading a bundle onto a backend, and proving it runs the model it claims before it serves a prediction.

A bundle is trusted only after every check: archive, checksums and signature (`read_bundle`), a backend that
can run it (`choose_backend`), and the golden input reproducing the golden output on *this* device's backend
within the manifest's tolerance. A device whose accelerator quietly computes something else (a bad delegate,
a broken driver, a wrong build) is caught here instead of publishing wrong predictions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from edge_runtime.backends.base import Attempt, BackendChoice, BackendUnavailable, BundleModels, LoadedBackend
from edge_runtime.backends.select import choose_backend
from edge_runtime.board import Board
from edge_runtime.bundle import DEFAULT_MAX_SIZE, Bundle, BundleError, GoldenSpec, TensorSpec, read_bundle
from edge_runtime.card import AudioInput, ImageInput, ModelCard, TimeSeriesInput
from edge_runtime.config import BackendConfig
from edge_runtime.detection import DetectionDecoder
from edge_runtime.feeds import CardMismatch, InputPlan, plan_inputs
from edge_runtime.postprocess import predictions

_log = logging.getLogger(__name__)


class ModelLoadError(BundleError):
    """A bundle that passed its own checks but cannot be served here (no backend, golden not reproduced)."""


@dataclass
class LoadedModel:
    """A bundle running on a backend, checked against its golden output."""

    name: str
    bundle: Bundle
    card: ModelCard | None
    choice: BackendChoice
    input_name: str
    output_name: str
    golden_max_error: float
    #: how every model input is fed (streamed, constants, state); None for a bundle without a card
    plan: InputPlan | None = None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch (batch first) on the chosen backend; every output by name."""
        return self.choice.backend.run(inputs)

    def close(self) -> None:
        self.choice.backend.close()

    @property
    def max_batch(self) -> int | None:
        return self.choice.backend.max_batch

    def describe(self) -> dict:
        """What runs, from where, and how far it can be trusted: for health messages and `bench`."""
        manifest = self.bundle.manifest
        model_file = manifest.files.get(manifest.model.path)
        return {
            "name": self.name,
            "version": manifest.version,
            "bundle": str(self.bundle.path),
            "model_sha256": model_file.sha256 if model_file else None,
            "format": manifest.model.format,
            "precision": manifest.model.precision,
            "target_board": manifest.target.board,
            "target_arch": manifest.target.arch,
            "signature": self.bundle.signature_status,
            "max_batch": self.max_batch,
            "golden_max_error": self.golden_max_error,
            "backend": self.choice.describe(),
        }


def _card(bundle: Bundle) -> ModelCard | None:
    if bundle.manifest.card is None:
        return None
    try:
        return ModelCard.model_validate(bundle.manifest.card)
    except ValidationError as exc:
        raise ModelLoadError(f"{bundle.path}: the model card in the manifest is invalid: {exc}") from None


def _warn_other_target(bundle: Bundle, board: Board) -> None:
    """A bundle is tuned for its target (activation signedness, fast operators): elsewhere it runs, maybe slower."""
    target = bundle.manifest.target
    if target.board != board.name or target.arch != board.arch:
        _log.warning(
            "%s was built for board '%s' (%s) but this board is '%s' (%s): it is loaded, but its quantization "
            "was chosen for the other board, so it may run slower; convert it with --target %s",
            bundle.path,
            target.board,
            target.arch,
            board.name,
            board.arch,
            board.name,
        )


def golden_error(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], spec: GoldenSpec, primary: str
) -> tuple[float, str | None]:
    """The largest absolute error over all golden outputs, and what does not match (None if all do).

    np.allclose semantics per output (|actual - expected| <= atol + rtol * |expected|); with `top1_must_match`
    the argmax of every row of the primary output must be the same too.
    """
    worst = 0.0
    for name, want in expected.items():
        if name not in actual:
            return worst, f"output '{name}' is missing"
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            return worst, f"output '{name}' has shape {list(got.shape)}, expected {list(want.shape)}"
        error = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0))
        worst = max(worst, error) if not np.isnan(error) else float("nan")
        if not np.allclose(got, want, rtol=spec.rtol, atol=spec.atol):
            return worst, f"output '{name}': max abs error {error:.3g} > atol {spec.atol:.3g} (rtol {spec.rtol:g})"
    if spec.top1_must_match and primary in expected:
        got, want = np.asarray(actual[primary]), expected[primary]
        if got.ndim >= 2:
            top_got = got.reshape(len(got), -1).argmax(axis=1)
            top_want = want.reshape(len(want), -1).argmax(axis=1)
            if not np.array_equal(top_got, top_want):
                return worst, f"output '{primary}': top-1 class {top_got.tolist()}, expected {top_want.tolist()}"
    return worst, None


def _fixed(dim: object) -> bool:
    """A dimension with a known size (not a symbolic name, None, or TFLite's -1)."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _describe_card_input(card: ModelCard) -> str:
    spec = card.input
    if isinstance(spec, TimeSeriesInput):
        return f"window {spec.window}, channels {spec.channels}, layout {spec.layout}"
    if isinstance(spec, ImageInput):
        return f"height {spec.height}, width {spec.width}, channels {spec.channels}, layout {spec.layout}"
    if isinstance(spec, AudioInput):
        front = f", {spec.features.type} features" if spec.features else ""
        return f"audio window {spec.window} at {spec.rate_hz} Hz{front}"
    return f"features {spec.features}"


def _card_io(path: Path, bundle: Bundle, card: ModelCard | None,
             backend: LoadedBackend) -> tuple[str, str, InputPlan | None]:
    """The model input and output the daemon will use, and how every other input is fed (constants, state),
    checked against what the backend actually runs and the manifest's shapes: a card that disagrees with its
    model would load fine and fail every batch later."""
    manifest = bundle.manifest
    inputs = list(getattr(backend, "input_names", None) or [spec.name for spec in manifest.inputs])
    outputs = list(getattr(backend, "output_names", None) or [spec.name for spec in manifest.outputs])
    if card is None:  # nothing to check against (bench of a card-less bundle): the first input and output
        return manifest.inputs[0].name, manifest.outputs[0].name, None
    problems = []
    specs = [spec for spec in manifest.inputs if spec.name in inputs]
    specs += [TensorSpec(name=name, shape=[], dtype="float32") for name in inputs
              if name not in {spec.name for spec in specs}]
    out_specs = [spec for spec in manifest.outputs if spec.name in outputs]
    out_specs += [TensorSpec(name=name, shape=[], dtype="float32") for name in outputs
                  if name not in {spec.name for spec in out_specs}]
    plan = None
    try:
        plan = plan_inputs(card, specs, out_specs)
        input_name = plan.streamed
    except CardMismatch as mismatch:
        problems += [message for _, message in mismatch.problems]
        input_name = card.input.name or inputs[0]
    output_name = card.output.name or outputs[0]
    if output_name not in outputs:
        problems.append(f"the card's output '{output_name}' is not an output of the model (it has: "
                        f"{', '.join(outputs)})")
    spec = next((tensor for tensor in manifest.inputs if tensor.name == input_name), None)
    if spec is not None and input_name in inputs:
        want, have = card.input.model_shape(), spec.shape[1:]
        differs = len(want) != len(have) or any(_fixed(h) and h != w for w, h in zip(want, have, strict=False))
        if differs:
            shown = ", ".join(str(dim) if dim is not None else "?" for dim in spec.shape)
            problems.append(f"model input '{input_name}' has shape [{shown}] but the card "
                            f"({_describe_card_input(card)}) makes [batch, {', '.join(map(str, want))}]")
    if problems:
        raise ModelLoadError(f"{path}: the model card does not match the model: {'; '.join(problems)}")
    return input_name, output_name, plan


def _run_card_shaped_zeros(path: Path, choice: BackendChoice, card: ModelCard, input_name: str,
                           output_name: str, plan: InputPlan | None) -> None:
    """One batch exactly as the daemon will build it from the card (constants and the initial state included),
    through the backend and postprocessing."""
    zeros = np.zeros([1, *card.input.model_shape()], dtype=np.float32)
    try:
        outputs = choice.backend.run(plan.feed(zeros) if plan is not None else {input_name: zeros})
        if plan is not None and plan.stateful:
            plan.next_state(outputs)  # the state output must fit its input, or the second window fails
        if output_name not in outputs:
            raise ValueError(f"no output '{output_name}' in the results ({', '.join(outputs)})")
        if len(outputs[output_name]) != 1:
            raise ValueError(f"output '{output_name}' has shape {list(np.shape(outputs[output_name]))} for a "
                             "batch of 1")
        if card.is_detector:  # anchors that do not fit the head, a misnamed output: refused here, not per frame
            DetectionDecoder(card).decode(outputs)
        else:
            predictions(outputs[output_name], card)
    except Exception as exc:
        raise ModelLoadError(f"{path}: a batch shaped as the model card says ({input_name} "
                             f"{list(zeros.shape)}; {_describe_card_input(card)}) fails on {choice.active}: "
                             f"{exc}") from None


def _choose(path: Path, bundle: Bundle, backends: list[BackendConfig] | None, board: Board,
            accelerated: dict[str, bytes], earlier: list[Attempt]) -> BackendChoice:
    manifest = bundle.manifest
    models = BundleModels([spec.name for spec in manifest.inputs], [spec.name for spec in manifest.outputs],
                          accelerated)
    try:
        return choose_backend(bundle.model_bytes(), manifest.model.format, backends, board,
                              precision=manifest.model.precision, bundle=models, earlier=earlier)
    except BackendUnavailable as exc:
        raise ModelLoadError(f"{path}: cannot load {manifest.name} {manifest.version}: {exc}") from None


def _golden_for(bundle: Bundle, backend: LoadedBackend) -> tuple[GoldenSpec, dict[str, np.ndarray]]:
    """The golden output the backend must reproduce: an accelerator model's own (its simulator's) when it runs one
    that has it, else the bundle's."""
    entry = next((entry for entry in bundle.manifest.accelerated if entry.format == backend.accelerated), None)
    spec = entry.golden if entry is not None and entry.golden is not None else bundle.manifest.golden
    return spec, bundle.golden(spec)[1]


def _golden_check(bundle: Bundle, choice: BackendChoice, golden_inputs: dict[str, np.ndarray], output_name: str,
                  warmup_runs: int) -> tuple[float, str | None]:
    """Warm up (a lazily built engine is paid for here), then the largest golden error and what does not match."""
    spec, golden_outputs = _golden_for(bundle, choice.backend)
    try:
        for _ in range(max(warmup_runs, 0)):
            choice.backend.run(golden_inputs)
        actual = choice.backend.run(golden_inputs)
    except Exception as exc:
        return float("nan"), f"the golden input fails on {choice.active}: {exc}"
    error, problem = golden_error(actual, golden_outputs, spec, output_name)
    return error, (None if problem is None else f"golden output not reproduced on {choice.active}: {problem}")


def load_bundle_model(
    path: Path,
    *,
    name: str | None,
    backends: list[BackendConfig] | None,
    board: Board,
    trusted_keys: list[Ed25519PublicKey] | None,
    require_signature: bool,
    warmup_runs: int = 3,
    max_bundle_bytes: int = DEFAULT_MAX_SIZE,
) -> LoadedModel:
    """Read, verify, load and golden-check a bundle; ModelLoadError (a BundleError) if any step fails.

    The model card must agree with the model the backend runs: its input (or the model's only input) and its
    output are the model's, its input shape (window, channels, layout or image size) is the model input's, and
    one batch of zeros built the way the daemon builds batches from the card runs. Warm-up runs come first so a
    lazily built engine (TensorRT, a delegate's compile) is paid for here and the golden check sees the backend
    as it will run. On failure the backend is closed: nothing half-loaded.
    """
    bundle = read_bundle(path, trusted_keys=trusted_keys, require_signature=require_signature,
                         max_size=max_bundle_bytes)
    manifest = bundle.manifest
    card = _card(bundle)
    _warn_other_target(bundle, board)
    golden_inputs, _ = bundle.golden()
    accelerated = {entry.format: bundle.read(entry.path) for entry in manifest.accelerated}
    earlier: list[Attempt] = []
    while True:
        choice = _choose(path, bundle, backends, board, accelerated, earlier)
        try:
            input_name, output_name, plan = _card_io(path, bundle, card, choice.backend)
            error, problem = _golden_check(bundle, choice, golden_inputs, output_name, warmup_runs)
            variant = choice.backend.accelerated
            if problem is not None and variant in accelerated:
                # An accelerator that computes something else is not used: the next backend runs the portable
                # model, and the model is reported degraded with this reason.
                earlier.append(Attempt(choice.backend.name, choice.backend.device, problem))
                del accelerated[variant]
                choice.backend.close()
                continue
            if problem is not None:
                raise ModelLoadError(f"{path}: {problem}")
            if card is not None:
                _run_card_shaped_zeros(path, choice, card, input_name, output_name, plan)
        except BaseException:
            choice.backend.close()
            raise
        break
    # the backend has the model now: the bundle's copy of it (and of accelerator models) would stay for as long
    # as the model is served, megabytes each
    bundle.release(manifest.model.path, *(entry.path for entry in manifest.accelerated))
    accelerated.clear()

    model = LoadedModel(
        name=name or manifest.name,
        bundle=bundle,
        card=card,
        choice=choice,
        input_name=input_name,
        output_name=output_name,
        golden_max_error=error,
        plan=plan,
    )
    _log.info(
        "loaded %s %s from %s on %s%s (golden max error %.3g, signature: %s)",
        model.name,
        manifest.version,
        path,
        choice.active,
        " (DEGRADED)" if choice.degraded else "",
        error,
        bundle.signature_status,
    )
    return model
