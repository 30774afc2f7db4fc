"""`edge-convert`: convert a model into a bundle, inspect a bundle, make a signing key pair.

edge-convert MODEL -o OUT.bundle --target BOARD [--card CARD.yaml] [--calibration DATA.npz] [--eval DATA.npz]
             [--quantize auto|int8|fp16|none] [--max-accuracy-drop 0.005] [--prune RATIO|auto]
             [--sign-key KEY] [--skip PASSES] [--edgetpu-model MODEL_edgetpu.tflite]
edge-convert inspect OUT.bundle [--json] [--trusted-key KEY.pub]
edge-convert keygen NAME [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from converter.errors import ConversionError
from edge_runtime.board import known_boards
from edge_runtime.bundle import BundleError
from edge_runtime.signing import SigningError
from edge_runtime.yaml_source import ConfigError

EXIT_ERROR = 2
EXIT_REFUSED = 1


def _convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-convert",
        description="Convert a trained ONNX (or TFLite) model into a verified bundle for a board. "
        "Other commands: 'edge-convert inspect BUNDLE', 'edge-convert keygen NAME'.",
    )
    parser.add_argument("model", type=Path, help="ONNX or TFLite model file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="bundle to write (e.g. model.bundle)")
    parser.add_argument("--target", required=True, help=f"board: {', '.join(known_boards())} or a board YAML")
    parser.add_argument("--card", type=Path, help="model card YAML: labels, input window/normalisation, output "
                        "(optional for ultralytics exports: inferred from their metadata)")
    parser.add_argument("--calibration", type=Path,
                        help="npz with model inputs (and y), or a folder of images, for calibration")
    parser.add_argument("--eval", dest="evaluation", type=Path,
                        help="npz with model inputs and y, or a folder of images, for verification")
    parser.add_argument("--quantize", choices=["auto", "int8", "fp16", "none"], default="auto")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.005, help="fraction, default 0.005")
    parser.add_argument(
        "--prune",
        metavar="RATIO|auto",
        help="remove channels before quantizing: a share of every prunable layer's channels (e.g. 0.3), or "
        "'auto' to spend the accuracy budget where it saves the most work (needs --calibration)",
    )
    parser.add_argument("--sign-key", type=Path, help="ed25519 private key (from 'edge-convert keygen')")
    parser.add_argument("--edgetpu-model", type=Path,
                        help="the Edge TPU-compiled TFLite (edgetpu_compiler's output for MODEL): bundled next to "
                        "it for Coral boards, which fall back to MODEL on the CPU")
    parser.add_argument(
        "--skip", default="", help="comma-separated passes to switch off: fuse,quantize,verify,reference"
    )
    parser.add_argument("--no-latency", action="store_true", help="do not measure latency (faster)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return parser


def _run_convert(argv: list[str], console: Console, errors: Console) -> int:
    from converter.options import ConvertOptions, GateFailed
    from converter.pipeline import convert
    from converter.report import render_report

    args = _convert_parser().parse_args(argv)
    options = ConvertOptions(
        model=args.model,
        output=args.output,
        target=args.target,
        card=args.card,
        calibration=args.calibration,
        evaluation=args.evaluation,
        quantize=args.quantize,
        max_accuracy_drop=args.max_accuracy_drop,
        sign_key=args.sign_key,
        skip={name.strip() for name in args.skip.split(",") if name.strip()},
        measure_latency=not args.no_latency,
        prune=args.prune,
        edgetpu_model=args.edgetpu_model,
    )
    try:
        result = convert(options, errors)
    except GateFailed as exc:
        render_report(exc.report.as_dict(), errors)
        errors.print(f"edge-convert: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(result.report.as_dict(), indent=2))
    else:
        render_report(result.report.as_dict(), console)
        extras = "".join(f" + {entry.path} for the {entry.accelerator}" for entry in result.manifest.accelerated)
        console.print(
            f"wrote {options.output} ({result.manifest.model.precision}, {result.manifest.model.format}{extras})",
            markup=False,
            highlight=False,
        )
    return 0


def _run_inspect(argv: list[str], console: Console) -> int:
    from converter.inspect_bundle import inspect_bundle

    parser = argparse.ArgumentParser(prog="edge-convert inspect", description="Show a bundle's manifest and report")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="machine-readable: the manifest plus signature status")
    parser.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        default=[],
        help="public key (or folder of .pub files) the signature must verify against",
    )
    args = parser.parse_args(argv)
    return inspect_bundle(args.bundle, console, as_json=args.json, trusted=args.trusted_key)


def _run_keygen(argv: list[str], console: Console) -> int:
    from edge_runtime.signing import generate_keypair

    parser = argparse.ArgumentParser(prog="edge-convert keygen", description="Make an ed25519 signing key pair")
    parser.add_argument("name", help="writes NAME.key (private, mode 0600) and NAME.pub")
    parser.add_argument("--dir", type=Path, default=Path("."), help="folder for the key files")
    args = parser.parse_args(argv)
    private, public = generate_keypair(args.name, args.dir)
    console.print(f"private key: {private}  (keep it secret; pass it to --sign-key)", markup=False)
    console.print(f"public key:  {public}  (copy it to the devices' trusted keys)", markup=False)
    return 0


def _width() -> int | None:
    """The terminal's width, or a width that fits the report table when the output goes to a file or a pipe."""
    return None if sys.stdout.isatty() else 150


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(highlight=False, width=_width())
    errors = Console(stderr=True, highlight=False, width=_width())
    try:
        if argv and argv[0] == "inspect":
            return _run_inspect(argv[1:], console)
        if argv and argv[0] == "keygen":
            return _run_keygen(argv[1:], console)
        return _run_convert(argv, console, errors)
    except ConfigError as exc:
        for problem in exc.problems:
            errors.print(f"edge-convert: error: {problem}", markup=False, soft_wrap=True)
        return EXIT_ERROR
    except (ConversionError, BundleError, SigningError) as exc:
        errors.print(f"edge-convert: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
