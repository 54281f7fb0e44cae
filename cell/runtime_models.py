"""Trained models on a chosen runtime: ``torch`` (the model directory itself) or an exported model on
``onnx`` (ONNX Runtime) / ``openvino`` (see :mod:`detectors.export`). Used by ``cell export``, ``cell eval
--runtime`` and ``cell inspect --runtime``.

Where ``--model DIR --runtime R`` (R != torch) looks: DIR itself when it is an exported directory (has a
``manifest.json``), else ``DIR/exported/R`` (where ``cell export --model DIR --format R`` writes by default).
An exported directory carries copies of its source's input spec, thresholds and provenance
(:data:`COPIED_FILES`), so it scores alone; when it sits inside its source model directory, a source whose
weights changed since the export is refused (re-export).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cell.errors import CellError
from detectors.model_dir import (
    CONFIG_FILE, INPUT_FILE, WEIGHTS_FILE, TrainedModel, file_sha256, image_threshold, load_detector, load_model,
    read_input_spec, read_part_threshold,
)

RUNTIMES = ("torch", "onnx", "openvino")
#: Files of the source model directory copied into an export: what scoring needs besides the graph.
COPIED_FILES = (INPUT_FILE, "threshold.json", "part_threshold.json", "provenance.json")


def source_record(model_dir: Path) -> dict[str, Any]:
    """What an export's manifest records of its source model: the directory and the sha256 of its weights
    and config."""
    return {
        "model_dir": str(Path(model_dir).resolve()),
        "weights_sha256": file_sha256(Path(model_dir) / WEIGHTS_FILE),
        "config_sha256": file_sha256(Path(model_dir) / CONFIG_FILE),
    }


def export_trained_model(model_dir: Path, fmt: str, out: Optional[Path] = None) -> tuple[Path, dict[str, Any]]:
    """Export the model in ``model_dir`` (loaded on the CPU) as ``fmt`` into ``out`` (default
    ``model_dir/exported/<fmt>``), with copies of :data:`COPIED_FILES`; returns (out, manifest).

    OpenVINO is converted from ``model_dir/exported/onnx`` when that export exists, is intact and was made
    from the current weights (the ONNX translation is the slow step); the parity check runs either way."""
    from detectors.export import default_out, export_model

    model_dir = Path(model_dir)
    detector = load_detector(model_dir, device="cpu")
    out = Path(out) if out is not None else default_out(model_dir, fmt)
    source = source_record(model_dir)
    onnx_file = _current_onnx_export(model_dir, source) if fmt == "openvino" else None
    manifest = export_model(detector, out, fmt, source=source, onnx_file=onnx_file,
                            copy_files=[model_dir / name for name in COPIED_FILES])
    return out, manifest


def _current_onnx_export(model_dir: Path, source: dict[str, Any]) -> Optional[Path]:
    """``model_dir/exported/onnx/model.onnx`` when its manifest records these weights and config and the
    file is the one exported; else None."""
    from detectors.export import ExportError, default_out, read_manifest

    directory = default_out(model_dir, "onnx")
    try:
        manifest = read_manifest(directory)
    except ExportError:
        return None
    recorded = manifest.get("source", {})
    model_file = directory / "model.onnx"
    if (recorded.get("weights_sha256") != source["weights_sha256"]
            or recorded.get("config_sha256") != source["config_sha256"] or not model_file.is_file()
            or file_sha256(model_file) != manifest["files"].get("model.onnx")):
        return None
    return model_file


def _check_not_stale(exported: Path, manifest: dict[str, Any]) -> None:
    """An export inside its source model directory (``<model>/exported/<fmt>``) must match its weights."""
    parent = exported.parent.parent
    recorded = manifest.get("source", {}).get("weights_sha256")
    weights = parent / WEIGHTS_FILE
    if exported.parent.name == "exported" and recorded and weights.is_file() and file_sha256(weights) != recorded:
        raise CellError(f"{exported}: exported from other weights than {weights} holds now; run `cell export "
                        f"--model {parent} --format {manifest['format']}` again")


def load_model_for_runtime(
    model_dir: str | Path, *, runtime: str = "torch", device: str = "auto",
    threshold_override: Optional[float] = None,
) -> TrainedModel:
    """The trained model ``--model model_dir --runtime runtime`` means (module docstring). ``torch``: the
    model directory on ``device``; ``onnx`` / ``openvino``: the exported model on the CPU (``device`` must be
    ``auto`` or ``cpu``), with the export's copies of the input spec and thresholds. ``directory`` of the
    result: the directory actually scored (its provenance.json is what eval excludes training images by).
    Errors are one line (:class:`CellError`, :class:`~detectors.export.ExportError`)."""
    if runtime not in RUNTIMES:
        raise CellError(f"runtime '{runtime}': must be one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return load_model(model_dir, device=device, threshold_override=threshold_override)
    from detectors.export import load_exported, resolve_exported

    if device not in ("auto", "cpu"):
        raise CellError(f"--device {device}: --runtime {runtime} runs on the CPU; use --runtime torch for {device}")
    directory = resolve_exported(model_dir, runtime)
    runner = load_exported(directory, runtime=runtime)
    _check_not_stale(directory, runner.manifest)
    spec = read_input_spec(directory)
    threshold = image_threshold(directory, threshold_override)
    return TrainedModel(directory, runner, spec, threshold, read_part_threshold(directory))
