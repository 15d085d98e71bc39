"""`python -m ocr_devkit.emulator`: run the emulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from .admission import DEFAULT_MAX_WAIT_S
from .batch_faults import DEFAULT_COMPLETION_DELAY_S
from .batch_files import DEFAULT_MAX_TOTAL_BYTES
from .engine import shared_engine
from .faults import FaultKind
from .server import EmulatorServer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ocr_devkit.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind, 0 for any free one (default 8765)")
    parser.add_argument("--api-key", help="accept only this Bearer key (default: any non-empty key)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail, 0..1")
    parser.add_argument(
        "--fault-kinds",
        default=",".join(kind.value for kind in FaultKind),
        help="comma-separated kinds drawn by --fault-rate (default: all of them)",
    )
    parser.add_argument("--seed", type=int, help="seed of the random faults, for a reproducible run")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="least time from a request's arrival to its successful reply"
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with a 429")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang fault holds the connection")
    parser.add_argument(
        "--max-queue-wait",
        type=float,
        default=DEFAULT_MAX_WAIT_S,
        help=f"seconds a request may wait for the OCR engine before a 429 (default {DEFAULT_MAX_WAIT_S:g})",
    )
    batch = parser.add_argument_group("Batch File API")
    batch.add_argument(
        "--batch-completion-delay",
        type=float,
        default=DEFAULT_COMPLETION_DELAY_S,
        help=f"least seconds from a batch's creation to its final status (default {DEFAULT_COMPLETION_DELAY_S:g})",
    )
    batch.add_argument(
        "--batch-outcomes",
        default="",
        help="comma-separated outcomes of the next batches, one each: completed, failed, expired, cancelled",
    )
    batch.add_argument("--batch-error-every", type=int, help="send every Nth line of a batch to its error file")
    batch.add_argument("--batch-error-ids", default="", help="comma-separated custom_ids sent to the error file")
    batch.add_argument("--batch-error-status", type=int, default=500, help="status code of those lines (default 500)")
    batch.add_argument(
        "--batch-error-code", help="their error code (default InternalError, or InvalidParameter for 4xx)"
    )
    batch.add_argument(
        "--max-file-storage-mb",
        type=float,
        default=DEFAULT_MAX_TOTAL_BYTES / 1024 / 1024,
        help="files kept in memory at most, in MB; uploads beyond are refused (default 200)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def batch_error_lines(args: argparse.Namespace) -> list[dict[str, Any]]:
    custom_ids = [item.strip() for item in args.batch_error_ids.split(",") if item.strip()]
    if not custom_ids and args.batch_error_every is None:
        return []
    rule: dict[str, Any] = {"custom_ids": custom_ids, "every_nth": args.batch_error_every}
    rule["status_code"] = args.batch_error_status
    if args.batch_error_code:
        rule["code"] = args.batch_error_code
    return [rule]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = EmulatorServer(
            args.host,
            args.port,
            api_key=args.api_key,
            engine=shared_engine(),
            fault_rate=args.fault_rate,
            fault_kinds=[kind.strip() for kind in args.fault_kinds.split(",") if kind.strip()],
            seed=args.seed,
            latency_ms=args.latency_ms,
            retry_after_seconds=args.retry_after,
            hang_seconds=args.hang_seconds,
            max_queue_wait_s=args.max_queue_wait,
            batch_completion_delay_s=args.batch_completion_delay,
            batch_outcomes=[item.strip() for item in args.batch_outcomes.split(",") if item.strip()],
            batch_error_lines=batch_error_lines(args),
            max_file_storage_bytes=int(args.max_file_storage_mb * 1024 * 1024),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("loading the OCR models...", flush=True)
    shared_engine().warm_up()
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"DashScope emulator on {server.base_url}", flush=True)
    print(f"  native:     {server.native_base}", flush=True)
    print(f"  compatible: {server.compatible_base}  (chat/completions, files, batches)", flush=True)
    print(f"  control:    {server.base_url}/_emulator/stats", flush=True)
    try:
        # Waiting with a timeout keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        print("emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
