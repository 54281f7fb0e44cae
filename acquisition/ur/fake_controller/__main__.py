"""``python -m acquisition.ur.fake_controller``: run a fake UR5 controller until interrupted.

Prints one line ``FAKE_UR_READY {"host": ..., "control_port": ...}`` on stdout once every port listens.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from acquisition.ur.fake_controller.server import FakeController


def _version(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.split(".")]
    if not 1 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"controller version {text!r}: expected MAJOR.MINOR.BUGFIX[.BUILD]")
    return tuple((parts + [0, 0, 0])[:4])  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acquisition.ur.fake_controller", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.x)")
    parser.add_argument("--controller-version", type=_version, default=(3, 15, 7, 106331),
                        help="reported controller version; 3.x streams at 125 Hz, 5.x at 500 Hz")
    parser.add_argument("--tick-hz", type=float, default=None, help="override the controller frequency (Hz)")
    parser.add_argument("--control-port", type=int, default=0, help="fault-injection port (0 = any free port)")
    parser.add_argument("--exit-with-stdin", action="store_true",
                        help="exit when stdin closes (the launching process died)")
    args = parser.parse_args(argv)
    controller = FakeController(args.host, args.controller_version, args.tick_hz)
    try:
        control_port = controller.start(args.control_port)
    except OSError as exc:
        print(f"fake-ur: error: cannot listen on {args.host}: {exc}", file=sys.stderr, flush=True)
        return 2
    print("FAKE_UR_READY " + json.dumps({"host": args.host, "control_port": control_port,
                                         "tick_hz": controller.tick_hz}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if args.exit_with_stdin:
        def _watch_stdin() -> None:
            sys.stdin.read()
            done.set()
        threading.Thread(target=_watch_stdin, daemon=True).start()
    while not done.is_set() and not controller.stopping.is_set():
        done.wait(0.2)
    controller.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
