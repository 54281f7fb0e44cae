"""Hardware-path benchmark -> benchmarks/results/hardware.json.

Real ur_rtde client against the fake controller subprocess (connect time, moveL round-trip overhead
beyond the motion's own duration, fake CPU use while streaming at 500 Hz) and harvesters with
genicam's simulated producer (frames per second, fetch latency). Run:
``.venv/bin/python -m benchmarks.bench_hardware [--out benchmarks/results/hardware.json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the benchmarks package importable

from acquisition.envelope import SafetyEnvelope  # noqa: E402
from acquisition.ur import URRobot, URRobotConfig  # noqa: E402
from acquisition.ur.robot import trapezoid_duration  # noqa: E402
from acquisition.ur.fake_controller import start_fake  # noqa: E402
from benchmarks.timing import Stopwatch, median_s, time_repeated, write_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "hardware.json"
ENVELOPE = SafetyEnvelope(workspace_min=(-0.30, -0.70, 0.20), workspace_max=(0.30, -0.20, 0.70))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_robot() -> dict:
    out: dict = {}
    fake = start_fake()
    try:
        connects = []
        for _ in range(3):
            rob = URRobot(URRobotConfig(host=fake.host), envelope=ENVELOPE)
            with Stopwatch() as sw:
                rob.connect()
            connects.append(sw.wall_s)
            rob.close()
        out["connect_s_median"] = median_s(connects)
        with URRobot(URRobotConfig(host=fake.host), envelope=ENVELOPE) as rob:
            start = rob.tcp_pose()
            # A move to where the TCP already is: pure round trip (checks, RTDE handshake, watch, verify).
            round_trips = time_repeated(lambda: rob.move_linear(start, 0.25, 1.2), 10)
            out["moveL_zero_length_round_trip_s_median"] = median_s(s.wall_s for s in round_trips)
            # 10 mm moves: wall time minus the trapezoid duration of the motion itself.
            overheads = []
            for i in range(6):
                target = start.copy()
                target[2] -= 0.01 if i % 2 == 0 else 0.0
                distance = float(np.linalg.norm(target[:3] - rob.tcp_pose()[:3]))
                with Stopwatch() as sw:
                    rob.move_linear(target, 0.25, 1.2)
                overheads.append(sw.wall_s - trapezoid_duration(distance, 0.25, 1.2))
            out["moveL_10mm_overhead_beyond_trapezoid_s_median"] = median_s(overheads)
        fake.stop()
        fake = start_fake(controller_version="5.11.1")  # e-Series: 500 Hz
        import rtde_receive

        receiver = rtde_receive.RTDEReceiveInterface(fake.host)
        time.sleep(0.5)
        c0, t0 = _cpu_seconds(fake.pid), time.perf_counter()
        time.sleep(3.0)
        out["fake_cpu_fraction_of_one_core_at_500Hz"] = (_cpu_seconds(fake.pid) - c0) / (time.perf_counter() - t0)
        receiver.disconnect()
    finally:
        fake.stop()
    return out


def bench_camera() -> dict:
    import genicam

    from acquisition.genicam.camera import GenICamCamera, GenICamCameraConfig

    viky = Path(genicam.__file__).parent / "viky.cti"
    cfg = GenICamCameraConfig(producer=viky, pixel_format="Mono8")
    with GenICamCamera(cfg) as cam:
        cam.capture()  # warm-up
        with Stopwatch() as total:
            latencies = time_repeated(cam.capture, 20)
    return {"harvesters_fps": 20 / total.wall_s, "fetch_latency_s_median": median_s(s.wall_s for s in latencies),
            "producer": "genicam viky.cti (free-run 20 fps, 400x400 Mono8)"}


def main(argv: list[str] | None = None) -> dict:
    """Run both benchmarks, write the JSON file (``--out``, default :data:`OUT`) and return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    results = {"machine": platform.platform(), "python": platform.python_version(), "robot": bench_robot(),
               "camera": bench_camera()}
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
