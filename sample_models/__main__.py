"""``python -m sample_models NAME OUTDIR``: put a sample model's four files where a person wants them.

The demo uses it to get an ONNX model, its card and its calibration/eval data in one step; the files come
from the build cache, so only the first run trains.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import SAMPLE_NAMES, SampleModel, build_sample


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sample_models",
        description="Train (once, cached) a sample model on a package-shipped data set and copy its files.",
    )
    parser.add_argument(
        "name", choices=SAMPLE_NAMES, metavar="NAME", help=f"one of: {', '.join(SAMPLE_NAMES)}"
    )
    parser.add_argument("outdir", type=Path, metavar="OUTDIR", help="folder to copy the files into")
    parser.add_argument(
        "--recording",
        action="store_true",
        help="also write NAME.recording.csv, the held-out sensor stream in class runs (activity samples only)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="build cache (default: $EDGE_CACHE_DIR or .cache/models)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sample = build_sample(args.name, cache_dir=args.cache_dir)
    args.outdir.mkdir(parents=True, exist_ok=True)
    target = SampleModel.in_directory(args.outdir, args.name)
    for source, destination in zip(sample.paths, target.paths, strict=True):
        shutil.copyfile(source, destination)
        print(destination)
    if args.recording:
        if not args.name.startswith("activity"):
            print("only the activity samples have a sensor recording", file=sys.stderr)
            return 2
        from .recording import write_activity_recording

        print(write_activity_recording(args.outdir / f"{args.name}.recording.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
