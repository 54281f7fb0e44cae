"""``cell export``: a trained model's whole inference path as ONNX or OpenVINO, checked for parity.

    cell export --model models/simplenet --format onnx|openvino [--out DIR]

Writes ``DIR`` (default ``<model>/exported/<format>``) atomically: the graph (``model.onnx`` or
``model.xml`` + ``model.bin``), ``manifest.json`` (format, opset, input shape and dtype, source model sha256,
tolerance, measured parity, torch/runtime versions) and copies of the model's input spec, thresholds and
provenance. Run it with ``cell eval --runtime <format>`` / ``cell inspect --runtime <format>``.
A model that cannot be exported, a missing runtime package or a non-empty OUT that is not an export is one
``error:`` line (exit 2), and nothing is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from rich.console import Console

from cell.runtime_models import export_trained_model

FORMATS = ("onnx", "openvino")


@click.command(name="export")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="trained model directory")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="ONNX (onnxruntime) or OpenVINO IR")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="exported directory to write (default: MODEL/exported/FORMAT, where --runtime looks)")
def command(model_dir: Path, fmt: str, out: Optional[Path]) -> None:
    """Export a trained model to ONNX or OpenVINO (parity with the torch model checked before writing)."""
    console = Console(stderr=True)
    console.print(f"exporting {model_dir} as {fmt} (tracing and translating the graph takes a while)")
    out, manifest = export_trained_model(model_dir, fmt, out)
    parity = manifest["parity"]
    tol = manifest["tolerance"]
    Console().print(
        f"exported {manifest['method']} to {out} ({fmt}, opset {manifest['opset']}, input "
        f"{manifest['input']['shape']} {manifest['input']['dtype']}); parity with torch on "
        f"{parity['n_images']} probe images: score error {parity['score_rel_err']:.2g}, map error "
        f"{parity['map_rel_err']:.2g} (tolerance {tol['score_rtol']:g})"
    )
