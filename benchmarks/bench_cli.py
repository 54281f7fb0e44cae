"""Benchmark of the CLI's start: wall time of ``cell --help`` and ``cell <command> --help`` in fresh processes
(what a user waits for; torch must not be imported for help, see tests/cell/test_cli.py).

Run: ``.venv/bin/python -m benchmarks.bench_cli [--runs 5] [--out benchmarks/results/cli.json]``.
Writes the median / min / max seconds per command line and the load average before and after (the numbers
are only comparable at a similar load).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the benchmarks package importable

from benchmarks.timing import write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cli.json"
COMMAND_LINES = (["--help"], ["train", "--help"], ["eval", "--help"], ["capture", "--help"], ["inspect", "--help"])


def time_command(argv: list[str], runs: int) -> dict[str, Any]:
    """Seconds of ``python -m cell.cli ARGV`` in a fresh process, ``runs`` times (the repository first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cell.cli", *argv], cwd=REPO, env=env, capture_output=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"cell {' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return {"argv": argv, "runs": runs, "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds)}


def run(out: Path = DEFAULT_OUT, runs: int = 5) -> dict[str, Any]:
    """Time every command line of :data:`COMMAND_LINES`, write ``out`` (JSON) and return the results."""
    load_before = os.getloadavg()
    timings = [time_command(argv, runs) for argv in COMMAND_LINES]
    results = {
        "benchmark": "cli",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "help": timings,
    }
    write_json(out, results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per command line")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    r = run(args.out, max(1, args.runs))
    for t in r["help"]:
        print(f"cell {' '.join(t['argv']):<16} median {t['median_s']:.2f} s (min {t['min_s']:.2f}, max {t['max_s']:.2f})")
    print(f"load average {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f} -> {args.out}")


if __name__ == "__main__":
    main()
