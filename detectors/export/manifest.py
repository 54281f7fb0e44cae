"""``manifest.json`` of an exported model directory: what was exported, from which model, how to run it.

Example (keys always present)::

    {"manifest_version": 1, "format": "onnx", "method": "simplenet", "opset": 18,
     "files": {"model.onnx": "<sha256>"},
     "input": {"name": "images", "shape": ["batch", 3, 256, 256]  (batch: "batch" = dynamic, or 1), "dtype": "float32", "layout": "NCHW RGB",
               "range": [0.0, 1.0]},
     "outputs": {"scores": ["batch"], "maps": ["batch", 256, 256]},
     "in_graph": ["clamp to [0, 1]", "backbone input normalisation", ...],
     "host": ["capture -> working image (input spec): decode, resize, tiling"],
     "source": {"model_dir": "models/simplenet", "weights_sha256": "...", "config_sha256": "..."},
     "tolerance": {"score_rtol": 0.001, "map_rtol": 0.001},
     "parity": {"probe": "...", "score_rel_err": 2.1e-06, "map_rel_err": 3.0e-06},
     "runtime_settings": {...}, "versions": {"torch": "2.14.1", ...}, "created": "2026-12-03T09:00:00Z"}

Read back, the manifest is untrusted: :func:`read_manifest` checks every key the runner relies on and
raises a one-line :class:`ExportError` naming the file, the key and the bad value.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from detectors.export.errors import ExportError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
FORMATS = ("onnx", "openvino")
#: The model file(s) of each format, in the order the runtime opens them.
MODEL_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest of an exported directory. Raises :class:`ExportError` (one line, naming the file
    and key) when it is missing, not JSON, of another version, or has a missing or bad key."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{path}: missing; not an exported model directory (write one with `cell export`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")

    def key(name: str, check: Any, what: str) -> Any:
        value = data.get(name)
        if not check(value):
            raise ExportError(f"{path}: key '{name}' = {value!r}: {what}")
        return value

    key("manifest_version", lambda v: v == MANIFEST_VERSION, f"this version reads manifest version {MANIFEST_VERSION}")
    fmt = key("format", lambda v: v in FORMATS, f"must be one of {', '.join(FORMATS)}")
    key("method", lambda v: isinstance(v, str) and v, "must name the detector method")
    files = key("files", lambda v: isinstance(v, dict) and all(isinstance(h, str) for h in v.values()),
                "must map file names to sha256 strings")
    for name in MODEL_FILES[fmt]:
        if name not in files:
            raise ExportError(f"{path}: key 'files' lacks '{name}', the {fmt} model file")
    shape = key("input", lambda v: isinstance(v, dict) and isinstance(v.get("shape"), list), "must give the input shape")["shape"]
    if not (len(shape) == 4 and shape[0] in ("batch", 1) and shape[1] == 3 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape[2:])
            and shape[2] == shape[3]):
        raise ExportError(f"{path}: key 'input.shape' = {shape!r}: expected ['batch' or 1, 3, S, S] with S >= 1")
    tolerance = key("tolerance", lambda v: isinstance(v, dict), "must be an object")
    for name in ("score_rtol", "map_rtol"):
        value = tolerance.get(name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
            raise ExportError(f"{path}: key 'tolerance.{name}' = {value!r}: must be a positive number")
    key("source", lambda v: isinstance(v, dict), "must be an object")
    return data


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as ``directory/manifest.json`` (the directory is a staging folder: see
    :mod:`detectors.export.directory`)."""
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
