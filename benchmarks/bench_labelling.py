"""Benchmark of the labelling app on a simulated capture store at the sim camera's resolution.

Measures (written to benchmarks/results/labelling.json), through the real HTTP server:
- open an image: what the browser asks when it opens a capture on a fresh server (image PNG, mask,
  superpixel label PNG: image decode, part region, SLIC, PNG encoding), cold caches. Target < 1 s.
- store a mask edit: one brush stroke POSTed, applied to the stored mask, written atomically (PNG,
  fsync, rename, row commit) and answered with the changed patch. Target < 100 ms. The strokes paint
  the type "bench" over a mask that already has the simulation's defect type, so the mask has several
  region types and every edit writes both files (binary mask and type label map): the slower case.
- carry-over per pose: warping a mask to another pose of the part (plane homography + lens
  distortion), first call (builds the camera's undistortion grid once) and the following ones.

Run:  .venv/bin/python benchmarks/bench_labelling.py [--edits 20] [--poses 4]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.timing import Sample, Stopwatch, summary_ms, write_json  # noqa: E402
from cell.commands.label import build_app  # noqa: E402
from cell.labelling.carry import carry_mask  # noqa: E402
from cell.labelling.server import LabellingHTTPServer  # noqa: E402
from cell.labelling.simdata import make_sim_dataset  # noqa: E402


def _ms(values: list[Sample]) -> dict[str, float | int]:
    """Wall and process-CPU milliseconds (on a shared machine the CPU time is the steadier number)."""
    return summary_ms(values, ("median", "mean", "max", "cpu_median"))


def _get(conn: http.client.HTTPConnection, path: str, body: dict | None = None) -> bytes:
    if body is None:
        conn.request("GET", path)
    else:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:200]!r}")
    return data


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (a clear usage error otherwise)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=_at_least(1), default=20, help="mask edits to time")
    parser.add_argument("--poses", type=_at_least(2), default=4, help="poses of the sim part (carry-over needs 2)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "labelling.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = make_sim_dataset(Path(tmp) / "ds", max_poses=args.poses, width=1280, height=1024)
        # --- open an image, cold: a fresh server per capture
        opens = []
        ids = []
        for k in range(args.poses):
            app = build_app(root)
            records = app.store.captures()
            ids = [r.id for r in records]
            cid = ids[k % len(ids)]
            server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
            with Stopwatch() as t:
                _get(conn, f"/api/captures/{cid}/image.png")
                _get(conn, f"/api/captures/{cid}/mask")
                _get(conn, f"/api/captures/{cid}/superpixels.png")
            opens.append(t.sample)
            conn.close()
            server.stop()
            app.store.close()

        # --- store a mask edit (brush strokes through HTTP, each stored)
        app = build_app(root)
        server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        cid = ids[0]
        revision = json.loads(_get(conn, f"/api/captures/{cid}/mask"))["revision"]
        edits = []
        for k in range(args.edits):
            x = 100 + 40 * (k % 25)
            body = {"op": "brush" if k % 3 else "erase", "base_revision": revision, "defect_type": "bench",
                    "points": [[x, 200 + 10 * k], [x + 60, 260 + 10 * k], [x + 90, 300 + 10 * k]], "radius": 12}
            with Stopwatch() as t:
                reply = json.loads(_get(conn, f"/api/captures/{cid}/edit", body))
            revision = reply["revision"]
            edits.append(t.sample)
        edited_types = json.loads(_get(conn, f"/api/captures/{cid}/mask"))["types"]
        conn.close()

        # --- carry-over per pose: the simulation's defect mask of a pose (a real defect's size), and the
        # edited mask of the first pose (strokes spread over much of the image: a large warp window)
        records = app.store.captures()
        geometry = app.geometry(records[0])
        carry: dict[str, list[Sample]] = {"first_call": [], "defect_mask": [], "large_mask": []}
        for name, src in (("defect_mask", records[1]), ("large_mask", records[0])):
            mask, _, _ = app.store.get_mask(src.id)
            for target in [r for r in records if r.id != src.id] * 3:
                with Stopwatch() as t:
                    carry_mask(mask, geometry, src.actual_pose, target.actual_pose)
                (carry["first_call"] if not carry["first_call"] else carry[name]).append(t.sample)
        server.stop()
        app.store.close()

    open_ms = _ms(opens)
    edit_ms = _ms(edits)
    result = {
        "benchmark": "labelling",
        "resolution": [1280, 1024],
        "open_image_with_superpixels": open_ms,
        "store_mask_edit": edit_ms,
        "store_mask_edit_region_types": edited_types,
        "carry_over_per_pose": {k: _ms(v) for k, v in carry.items() if v},
        "targets": {"open_image_ms": 1000, "store_edit_ms": 100},
        "meets_targets": {"open_image": open_ms["median_ms"] < 1000, "store_edit": edit_ms["median_ms"] < 100},
        "machine": {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
                    "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("open_image_with_superpixels", "store_mask_edit",
                                             "store_mask_edit_region_types", "carry_over_per_pose",
                                             "meets_targets")}, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
