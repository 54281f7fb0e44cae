"""Writing an exported model directory atomically, and finding one for a runtime.

Layout of an exported directory (``cell export --out OUT``; by default ``<model dir>/exported/<format>``)::

    manifest.json       what it is (detectors.export.manifest)
    model.onnx          ONNX graph                       (format onnx)
    model.xml, .bin     OpenVINO IR, float32 weights     (format openvino)
    <copied files>      e.g. input.json, threshold.json of the source model, so the directory scores alone

Writing (:func:`export_model`): everything goes into a staging folder beside OUT, is checked for parity with
the torch model at the runtime's real settings (an export outside the tolerance is refused and nothing is
written), then renamed into place. An existing OUT is replaced only when it is an exported directory
(it has a ``manifest.json``) or empty; any other non-empty OUT is refused.

Finding (:func:`resolve_exported`): ``--model DIR --runtime R`` runs DIR itself when it holds a
``manifest.json``, else ``DIR/exported/R``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from detectors.export.errors import ExportError
from detectors.export.manifest import FORMATS, MANIFEST_FILE, MODEL_FILES, read_manifest, write_manifest
from detectors.export.onnx_export import INPUT_NAME, OPSET, export_onnx
from detectors.export.parity import MAP_RTOL, SCORE_RTOL, measure, probe_images
from detectors.export.runtimes import versions
from detectors.model_dir import file_sha256

EXPORTED_SUBDIR = "exported"
IN_GRAPH = (
    "clamp to [0, 1]",
    "backbone input normalisation (mean/std of its pretrained weights)",
    "backbone and the method's head",
    "map post-processing of the method (upsampling to S x S, Gaussian blur, image score)",
)
ON_HOST = ("capture -> working image of the input spec (uint8/uint16 -> float, OpenCV INTER_AREA resize, tiling "
           "and stitching): the one input-preparation path shared with the torch runtime",)


def default_out(model_dir: str | Path, fmt: str) -> Path:
    """``<model_dir>/exported/<fmt>``: where ``cell export`` writes and ``--runtime fmt`` looks by default."""
    return Path(model_dir) / EXPORTED_SUBDIR / fmt


def resolve_exported(model_dir: str | Path, runtime: str) -> Path:
    """The exported directory ``--model model_dir --runtime runtime`` means: ``model_dir`` itself when it
    has a manifest.json, else ``model_dir/exported/<runtime>``; one-line :class:`ExportError` naming both
    places when neither exists."""
    model_dir = Path(model_dir)
    if (model_dir / MANIFEST_FILE).is_file():
        return model_dir
    nested = default_out(model_dir, runtime)
    if (nested / MANIFEST_FILE).is_file():
        return nested
    raise ExportError(
        f"{model_dir}: no {runtime} export (neither {model_dir / MANIFEST_FILE} nor {nested / MANIFEST_FILE}); "
        f"write one with `cell export --model {model_dir} --format {runtime}`"
    )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory; refusing to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise ExportError(f"{out}: exists, is not empty and is not an exported model (no {MANIFEST_FILE}); "
                          "refusing to overwrite it")


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    old: Optional[Path] = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_format(detector: Any, staging: Path, fmt: str, opset: int, onnx_file: Optional[Path]) -> Any:
    """Write the model file(s) of ``fmt``; returns the graph's batch axis (``"batch"`` or ``1``)."""
    if fmt == "onnx":
        return export_onnx(detector, staging / MODEL_FILES["onnx"][0], opset=opset)
    from detectors.export.openvino_export import export_openvino

    return export_openvino(detector, staging, opset=opset, onnx_file=onnx_file)


def export_model(
    detector: Any,
    out: str | Path,
    fmt: str,
    *,
    source: Optional[dict[str, Any]] = None,
    copy_files: Iterable[str | Path] = (),
    probe: Optional[torch.Tensor] = None,
    opset: int = OPSET,
    onnx_file: Optional[str | Path] = None,
) -> dict[str, Any]:
    """Export the fitted ``detector`` (on the CPU) as format ``fmt`` (``onnx`` | ``openvino``) into the
    directory ``out``, atomically (module docstring); returns the manifest written.

    ``source``: what the manifest records of the source model (e.g. ``{"model_dir", "weights_sha256",
    "config_sha256"}``). ``copy_files``: files copied beside the model (the source's input spec and
    thresholds). ``probe``: (n, 3, S, S) images of the parity check (default :func:`probe_images`).
    ``onnx_file`` (format openvino only): an ONNX export of this same detector to convert instead of
    exporting again; the parity check still compares the result with ``detector``.
    Raises :class:`ExportError` (unexportable model, refused OUT, parity beyond tolerance) and
    :class:`RuntimeMissing`.
    """
    from detectors.export.runner import load_exported

    if fmt not in FORMATS:
        raise ExportError(f"format '{fmt}': must be one of {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out)
    name = detector.name
    size = int(detector.config.image_size)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out.parent}: cannot create the output folder ({exc.strerror or exc})") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        started = time.perf_counter()
        if onnx_file is not None and fmt != "openvino":
            raise ExportError("onnx_file is only for format openvino")
        batch = _write_format(detector, staging, fmt, opset, Path(onnx_file) if onnx_file is not None else None)
        export_seconds = time.perf_counter() - started
        for item in copy_files:
            item = Path(item)
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        manifest: dict[str, Any] = {
            "manifest_version": 1,
            "format": fmt,
            "method": name,
            "opset": opset,
            "exporter": "torch.onnx.export(dynamo=True)" + (" -> openvino.convert_model" if fmt == "openvino" else ""),
            "files": {f: file_sha256(staging / f) for f in MODEL_FILES[fmt]},
            "input": {"name": INPUT_NAME, "shape": [batch, 3, size, size], "dtype": "float32",
                      "layout": "NCHW RGB", "range": [0.0, 1.0]},
            "outputs": {"scores": [batch], "maps": [batch, size, size]},
            "inference_batch_size": int(detector.config.inference_batch_size) if batch == "batch" else 1,
            "in_graph": list(IN_GRAPH),
            "host": list(ON_HOST),
            "source": dict(source or {}),
            "detector_config": detector.config.model_dump(mode="json"),
            "tolerance": {"score_rtol": SCORE_RTOL, "map_rtol": MAP_RTOL},
            "runtime_settings": _runtime_settings(fmt),
            "versions": versions(),
            "export_seconds": round(export_seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_manifest(staging, {**manifest, "parity": None})
        try:
            exported = load_exported(staging)
        except ExportError as exc:
            raise ExportError(f"{name}: the {fmt} export does not load ({exc})") from None
        images = probe if probe is not None else probe_images(size)
        parity = measure(detector, exported, images)
        parity["probe"] = "caller's images" if probe is not None else "detectors.export.parity.probe_images (synthetic)"
        del exported
        if not (parity["score_rel_err"] <= SCORE_RTOL and parity["map_rel_err"] <= MAP_RTOL):
            raise ExportError(
                f"{name}: the {fmt} export does not reproduce the torch model (relative error: score "
                f"{parity['score_rel_err']:.3g}, map {parity['map_rel_err']:.3g}; tolerance {SCORE_RTOL:g}); nothing written"
            )
        manifest["parity"] = parity
        write_manifest(staging, manifest)
        read_manifest(staging)
        _fsync_tree(staging)
        _check_out(out)  # unchanged while we worked
        _swap_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _runtime_settings(fmt: str) -> dict[str, Any]:
    from detectors.export.runner import OPENVINO_CONFIG

    threads = "torch.get_num_threads() of the running process"
    if fmt == "onnx":
        return {"onnxruntime": {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL",
                                "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                                "session.force_spinning_stop": "1"}}
    return {"openvino": {"device": "CPU", **OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads}}
