"""Hardware-path benchmark -> benchmarks/results/hardware.json.

Real ur_rtde client against the fake controller subprocess (connect time, moveL round-trip overhead
beyond the motion's own duration, fake CPU use while streaming at 500 Hz) and harvesters with
genicam's simulated producer (frames per second, fetch latency). Run:
``.venv/bin/python -m benchmarks.bench_hardware``.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from acquisition.envelope import SafetyEnvelope
from acquisition.ur import URRobot, URRobotConfig
from acquisition.ur.robot import trapezoid_duration
from acquisition.ur.fake_controller import start_fake

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
            t = time.perf_counter()
            rob.connect()
            connects.append(time.perf_counter() - t)
            rob.close()
        out["connect_s_median"] = statistics.median(connects)
        with URRobot(URRobotConfig(host=fake.host), envelope=ENVELOPE) as rob:
            start = rob.tcp_pose()
            # A move to where the TCP already is: pure round trip (checks, RTDE handshake, watch, verify).
            round_trips = []
            for _ in range(10):
                t = time.perf_counter()
                rob.move_linear(start, 0.25, 1.2)
                round_trips.append(time.perf_counter() - t)
            out["moveL_zero_length_round_trip_s_median"] = statistics.median(round_trips)
            # 10 mm moves: wall time minus the trapezoid duration of the motion itself.
            overheads = []
            for i in range(6):
                target = start.copy()
                target[2] -= 0.01 if i % 2 == 0 else 0.0
                distance = float(np.linalg.norm(target[:3] - rob.tcp_pose()[:3]))
                t = time.perf_counter()
                rob.move_linear(target, 0.25, 1.2)
                overheads.append(time.perf_counter() - t - trapezoid_duration(distance, 0.25, 1.2))
            out["moveL_10mm_overhead_beyond_trapezoid_s_median"] = statistics.median(overheads)
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
        cam.capture()
        latencies = []
        t0 = time.perf_counter()
        for _ in range(20):
            t = time.perf_counter()
            cam.capture()
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    return {"harvesters_fps": 20 / elapsed, "fetch_latency_s_median": statistics.median(latencies),
            "producer": "genicam viky.cti (free-run 20 fps, 400x400 Mono8)"}


def main() -> dict:
    results = {"machine": platform.platform(), "python": platform.python_version(), "robot": bench_robot(),
               "camera": bench_camera()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
