"""Running an exported model: :func:`load_exported` -> :class:`ExportedModel` with ``predict``.

An :class:`ExportedModel` scores like the detector it came from: ``predict(images (B, 3, S, S) float in
[0, 1]) -> Prediction`` (score (B,), anomaly_map (B, S, S), float32 numpy), with the same one-line input
checks, and a ``config`` carrying ``image_size`` and ``inference_batch_size``; so every caller of a detector
(the input-preparation path, the tiler, ``cell eval``, ``cell inspect``) runs it unchanged.

Runtime settings (the ones the parity tests and the benchmarks measure):

* ONNX Runtime: ``CPUExecutionProvider``, all graph optimisations, ``intra_op_num_threads`` =
  ``torch.get_num_threads()`` (the same thread budget as the torch path), one inter-op thread, worker threads
  spinning during a run only (``session.force_spinning_stop``).
* OpenVINO: device ``CPU``, ``INFERENCE_PRECISION_HINT=f32`` (its default on CPUs with bf16/fp16 units is
  NOT f32: a max error of 0.97 on features of magnitude 17 was measured), ``INFERENCE_NUM_THREADS`` as
  above, ``PERFORMANCE_HINT=LATENCY``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from detectors.base import Prediction
from detectors.export.errors import ExportError
from detectors.export.manifest import MODEL_FILES, read_manifest
from detectors.export.onnx_export import INPUT_NAME, _first_line
from detectors.export.runtimes import require

RUNTIMES = ("onnx", "openvino")
#: OpenVINO compile settings (see module docstring).
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


@dataclass(frozen=True)
class ExportedConfig:
    """What callers of a detector read from ``detector.config``: the input side S and the chunk size."""

    image_size: int
    inference_batch_size: int = 16
    device: str = "cpu"


class ExportedModel:
    """An exported model on ONNX Runtime or OpenVINO (see module docstring). ``name``: the method;
    ``runtime``: ``onnx`` | ``openvino``; ``directory``; ``manifest`` (the checked manifest.json)."""

    def __init__(self, directory: Path, manifest: dict[str, Any], runtime: str,
                 run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], batch_size: int) -> None:
        self.directory = directory
        self.manifest = manifest
        self.runtime = runtime
        self.name: str = manifest["method"]
        self.config = ExportedConfig(image_size=int(manifest["input"]["shape"][2]), inference_batch_size=batch_size)
        self.fitted = True
        self._run = run

    def predict(self, images: Any) -> Prediction:
        """Score (B, 3, S, S) float images in [0, 1] -> :class:`Prediction`; bad input is the same one-line
        :class:`~detectors.errors.ImageSetError` as ``Detector.predict``'s; a runtime failure or an output of
        the wrong shape is an :class:`ExportError`. Scores that are not finite are returned as they are
        (callers treat them as a fault, as with the torch model)."""
        from detectors.image_ops import check_batch

        where = f"{self.name} ({self.runtime}) predict"
        batch = check_batch(images, image_size=self.config.image_size, method=self.name, where=where)
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        s = self.config.image_size
        scores, maps = [], []
        for start in range(0, array.shape[0], self.config.inference_batch_size):
            chunk = array[start : start + self.config.inference_batch_size]
            try:
                score, amap = self._run(chunk)
            except Exception as exc:
                raise ExportError(f"{self.directory}: {self.runtime} run failed ({_first_line(exc)})") from None
            score = np.asarray(score, dtype=np.float32).reshape(-1)
            amap = np.asarray(amap, dtype=np.float32)
            if score.shape != (chunk.shape[0],) or amap.shape != (chunk.shape[0], s, s):
                raise ExportError(
                    f"{self.directory}: {self.runtime} returned scores {score.shape} and maps {amap.shape}, "
                    f"expected {(chunk.shape[0],)} and {(chunk.shape[0], s, s)}"
                )
            scores.append(score)
            maps.append(amap)
        return Prediction(score=np.concatenate(scores), anomaly_map=np.concatenate(maps))


def _threads(threads: Optional[int]) -> int:
    return int(threads) if threads else max(1, torch.get_num_threads())


def session_options(threads: int) -> Any:
    """The ONNX Runtime ``SessionOptions`` every exported model runs with (see module docstring)."""
    ort = require("onnxruntime", "--runtime onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # the intra-op threads spin while a run lasts (fast hand-over between nodes) but stop at its end: between
    # runs the host works (input checks, the capture's resize on OpenCV's threads, the map back to capture
    # size) and a spinning worker would take one of the line computer's few cores from it
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def _onnx_runner(model_path: Path, threads: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    ort = require("onnxruntime", "--runtime onnx")
    options = session_options(threads)
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{model_path}: onnxruntime cannot load it ({_first_line(exc)})") from None
    names = [o.name for o in session.get_outputs()]
    if [i.name for i in session.get_inputs()] != [INPUT_NAME] or names[:2] != ["scores", "maps"]:
        raise ExportError(f"{model_path}: expected input '{INPUT_NAME}' and outputs 'scores', 'maps'")

    def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, maps = session.run(["scores", "maps"], {INPUT_NAME: chunk})
        return scores, maps

    return run


def _openvino_runner(xml_path: Path, threads: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    ov = require("openvino", "--runtime openvino")
    try:
        core = ov.Core()
        compiled = core.compile_model(str(xml_path), "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        scores_port, maps_port = compiled.output("scores"), compiled.output("maps")
    except Exception as exc:
        raise ExportError(f"{xml_path}: OpenVINO cannot load it ({_first_line(exc)})") from None
    lock = threading.Lock()  # one infer request: one inference at a time

    def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with lock:
            results = request.infer({INPUT_NAME: chunk}, share_inputs=True)  # no copy of the input; outputs copied below
            return np.array(results[scores_port]), np.array(results[maps_port])

    return run


def load_exported(directory: str | Path, *, runtime: Optional[str] = None, threads: Optional[int] = None,
                  verify_files: bool = True) -> ExportedModel:
    """Open the exported model in ``directory`` (written by :func:`detectors.export.export_model`).

    ``runtime``: ``onnx`` | ``openvino``; None = the directory's format; a runtime that does not match the
    format is refused. ``threads``: intra-op threads (default ``torch.get_num_threads()``).
    ``verify_files``: check each model file's sha256 against the manifest (a changed file is refused).
    Raises :class:`ExportError` (one line naming the file) and :class:`RuntimeMissing`.
    """
    from detectors.model_dir import file_sha256

    directory = Path(directory)
    manifest = read_manifest(directory)
    fmt = manifest["format"]
    runtime = runtime or fmt
    if runtime not in RUNTIMES:
        raise ExportError(f"runtime '{runtime}': must be one of {', '.join(RUNTIMES)}")
    if runtime != fmt:
        raise ExportError(f"{directory}: holds a {fmt} export, not one for --runtime {runtime}")
    for name in MODEL_FILES[fmt]:
        path = directory / name
        if not path.is_file():
            raise ExportError(f"{path}: missing; the exported directory is incomplete")
        if verify_files and file_sha256(path) != manifest["files"][name]:
            raise ExportError(f"{path}: sha256 differs from {directory / 'manifest.json'}: the file was changed after export")
    count = _threads(threads)
    model_file = directory / MODEL_FILES[fmt][0]
    run = _onnx_runner(model_file, count) if fmt == "onnx" else _openvino_runner(model_file, count)
    if manifest["input"]["shape"][0] == 1:
        batch_size = 1  # a graph of fixed batch 1: one image per run
    else:
        value = manifest.get("inference_batch_size")
        batch_size = value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 16
    return ExportedModel(directory, manifest, runtime, run, batch_size)
