"""`edge-runtime`: the on-device daemon.

    edge-runtime run CONFIG.yaml [--exit-when-done]   the daemon
    edge-runtime check CONFIG.yaml                    validate config, bundles and backends; run nothing
    edge-runtime bench BUNDLE [--backend NAME] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import sys
import time
from pathlib import Path

from edge_runtime.yaml_source import ConfigError

EXIT_ERROR = 1
log = logging.getLogger("edge_runtime")


def _problem(message: str) -> None:
    print(f"edge-runtime: error: {message}", file=sys.stderr)


def _known_errors() -> tuple[type[BaseException], ...]:
    from edge_runtime.backends.base import BackendUnavailable
    from edge_runtime.bundle import BundleError
    from edge_runtime.signing import SigningError
    from edge_runtime.sources import SourceUnavailable

    return (BundleError, BackendUnavailable, SigningError, SourceUnavailable, ValueError, OSError)


def _cpuinfo_refusal(arch: str) -> str | None:
    """The one-line reason not to load the ARM runtimes here (they would die with SIGSEGV), or None."""
    from edge_runtime.hardware import hardware_root
    from edge_runtime.hardware.cpuinfo import cpuinfo_problem, installed_versions

    problem = cpuinfo_problem(hardware_root(), arch)
    installed = installed_versions()
    if problem is None or not installed:
        return None
    return f"{problem} (installed: {', '.join(installed)})"


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.config import load_config
    from edge_runtime.daemon import Daemon

    config = load_config(args.config)
    refusal = _cpuinfo_refusal(platform.machine())
    if refusal:
        _problem(refusal)
        return EXIT_ERROR
    # Several threads share the GIL (MQTT network loop, spool drainer, model workers); a 1 ms switch interval
    # instead of 5 ms keeps a message that arrives while another thread runs Python from waiting behind it.
    sys.setswitchinterval(0.001)
    daemon = Daemon(config)

    def on_signal(signum: int, frame: object) -> None:
        # Only a plain attribute: the handler runs on the main thread, possibly inside Event.wait() holding the
        # Event's lock, so Event.set() here could deadlock. Daemon.wait polls the flag.
        daemon.stop_requested = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        daemon.start()
    except _known_errors() as exc:
        _problem(str(exc))
        try:
            daemon.stop(drain_timeout=2.0)
        except Exception:  # the error above is what the user needs; a failing clean-up is only logged
            log.debug("cleaning up after the failed start failed", exc_info=True)
        return EXIT_ERROR
    if args.exit_when_done:
        daemon.stop_when_sources_finish()
    daemon.wait()
    daemon.stop()
    return 0


def _describe_board(detection) -> None:
    """Which board, from what, its accelerators as found here, and notes (a JetPack mismatch, a second match)."""
    from edge_runtime.hardware import hardware_root
    from edge_runtime.hardware.detect import accelerators_present, read_machine
    from edge_runtime.metrics import DeviceStats

    board, root = detection.board, hardware_root()
    print(detection.describe())
    for note in detection.notes:
        print(f"  note: {note}")
    print(f"  {board.arch}, {board.cpu or f'{board.cores} cores'}; {board.threads} inference thread(s)")
    for accelerator, found in accelerators_present(board, read_machine(root)):
        state = f"found ({found})" if found else "not found"
        print(f"  accelerator {accelerator.name}: {state}; reached by {accelerator.reached_by}")
    health = DeviceStats(board.thermal_zone, board.throttled_file, root=root).board_health()
    temperature = "not exposed" if health["temperature_c"] is None else f"{health['temperature_c']} C"
    throttling = health["throttling"]
    state = "not exposed" if throttling is None else (
        f"ACTIVE ({', '.join(throttling['now'])})" if throttling["active"] else "none")
    print(f"  temperature {temperature}, throttling {state}")


def _describe_backends(board) -> None:
    """Each backend plugin: its library and version, providers or delegates found, or why it is disabled."""
    from edge_runtime.backends import backend_plugins, load_plugin
    from edge_runtime.backends.base import BackendUnavailable

    for name in backend_plugins():
        try:
            module = load_plugin(name)
            describe = getattr(module, "describe_installed", None)
            text = describe(board) if describe is not None else "available"
        except BackendUnavailable as exc:
            text = f"disabled: {exc}"
        print(f"backend {name}: {text}")


def _memory_line(board) -> tuple[str, bool]:
    from edge_runtime.metrics import DeviceStats

    rss = DeviceStats.rss_mb()
    if rss is None or board.memory_budget_mb is None:
        return f"memory: {rss} MB resident (no budget in board {board.name})", True
    fits = rss <= board.memory_budget_mb
    return f"memory: {rss} MB resident with the models loaded, budget {board.memory_budget_mb} MB" + (
        "" if fits else f": OVER the budget of board {board.name}"), fits


def cmd_check(args: argparse.Namespace) -> int:
    """Everything `run` would load, loaded and verified; nothing started, nothing published."""
    from edge_runtime.config import load_config
    from edge_runtime.hardware import hardware_root
    from edge_runtime.hardware.detect import resolve_board
    from edge_runtime.model_loader import load_bundle_model
    from edge_runtime.signing import load_trusted_keys
    from edge_runtime.sources import create_source
    from edge_runtime.sources.base import SourceContext

    config = load_config(args.config)
    print(f"config {args.config}: ok (device {config.device_id}, broker {config.broker.url})")
    failures = 0
    try:
        detection = resolve_board(config.board, hardware_root())
        keys = load_trusted_keys(config.security.trusted_keys) if config.security.trusted_keys else None
        if config.security.control_keys:  # run refuses to start on a control key it cannot read: so does check
            load_trusted_keys(config.security.control_keys)
    except (ConfigError, LookupError, *_known_errors()) as exc:
        _problem(str(exc))
        return EXIT_ERROR
    board = detection.board
    _describe_board(detection)
    refusal = _cpuinfo_refusal(platform.machine())
    if refusal:  # loading a backend now would kill this process: say why instead, and load nothing
        _problem(refusal)
        return EXIT_ERROR
    _describe_backends(board)
    loaded = []
    for model_config in config.models:
        label = model_config.name or model_config.bundle.name
        try:
            model = load_bundle_model(model_config.bundle, name=model_config.name, backends=model_config.backends,
                                      board=board, trusted_keys=keys,
                                      # the same policy and limits as `run` (edge_runtime/daemon.py)
                                      require_signature=config.security.require_signature or bool(keys),
                                      max_bundle_bytes=config.security.max_bundle_bytes)
        except _known_errors() as exc:
            _problem(f"model {label}: {exc}")
            failures += 1
            continue
        choice = model.choice
        state = f"DEGRADED: {choice.reason}" if choice.degraded else "ok"
        print(f"model {model.name}: bundle {model_config.bundle} ({model.bundle.signature_status}), golden output "
              f"reproduced, backend {choice.active} {state}")
        try:
            create_source(model_config.source, SourceContext(card=model.card, sink=_NullSink(), subscriber=None))
            print(f"  source {model_config.source.type}: ok")
        except _known_errors() as exc:
            _problem(f"model {model.name}: source {model_config.source.type}: {exc}")
            failures += 1
        loaded.append(model)
    line, fits = _memory_line(board)  # measured with every model loaded, as `run` holds them
    print(line)
    failures += not fits
    for model in loaded:
        model.close()
    if failures:
        print(f"{failures} problem(s)", file=sys.stderr)
        return EXIT_ERROR
    return 0


class _NullSink:
    def accept(self, item) -> None:  # pragma: no cover - check never starts sources
        pass

    def reject(self, rejected, source: str) -> None:  # pragma: no cover
        pass


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_runtime.bench import bench_bundle, render_bench
    from edge_runtime.hardware import hardware_root
    from edge_runtime.hardware.detect import resolve_board

    board = resolve_board(args.board, hardware_root()).board
    result = bench_bundle(args.bundle, args.backend, board, seconds=args.seconds)
    print(json.dumps(result, indent=2) if args.json else render_bench(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run model bundles on this board and publish predictions and health over MQTT.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("config", type=Path)
    run.add_argument("--exit-when-done", action="store_true",
                     help="stop once every finite source (a replay without loop) has been fully processed")
    check = sub.add_parser("check", help="validate a config, its bundles and backends; run nothing")
    check.add_argument("config", type=Path)
    bench = sub.add_parser("bench", help="latency and throughput of a bundle on this board")
    bench.add_argument("bundle", type=Path)
    bench.add_argument("--backend", help="onnxruntime or tflite (default: the board's order)")
    bench.add_argument("--board", help="board name or YAML (default: the board this machine is detected as)")
    bench.add_argument("--seconds", type=float, default=5.0, help="measuring time per batch size")
    bench.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.Formatter.converter = time.gmtime
    commands = {"run": cmd_run, "check": cmd_check, "bench": cmd_bench}
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            _problem(problem)
        return EXIT_ERROR
    except _known_errors() as exc:
        _problem(str(exc))
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
