"""``cell eval``: score a test split once; write metrics.json, scores.csv, roc.png and report.html.

    cell eval --model models/simplenet --data DATASET --out reports/simplenet [--campaign NAME ...]
"""
from __future__ import annotations

import math
from pathlib import Path

import click

# rich and torch (through cell.evaluation) are imported inside the command: `cell eval --help` stays fast.


def _f(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


@click.command(name="eval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="model directory")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="capture store or MVTec-layout folder (its test/ side is used)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="report folder to write")
@click.option("--campaign", "campaigns", multiple=True, help="only these campaigns of a capture store")
@click.option("--device", default="auto", show_default=True,
              help="where the model runs: auto | cpu | cuda[:N] (whatever it was trained on)")
@click.option("--runtime", type=click.Choice(["torch", "onnx", "openvino"]), default="torch", show_default=True,
              help="torch, or an exported model (MODEL itself or MODEL/exported/RUNTIME; see `cell export`)")
def command(model_dir: Path, data: Path, out: Path, campaigns: tuple[str, ...], device: str, runtime: str) -> None:
    """Evaluate a trained model on a labelled test split (no model selection, scored once)."""
    from rich.console import Console
    from rich.table import Table

    from cell.evaluation import check_report_folder, evaluate_model
    from cell.progress import progress_callback

    check_report_folder(out)  # before the progress display, so a refusal is the only line
    console = Console(stderr=True)
    with progress_callback("scoring", console) as progress:
        metrics = evaluate_model(model_dir, data, out, campaigns=campaigns or None, progress=progress, device=device,
                                 runtime=runtime)
    table = Table(title=f"evaluation of {model_dir.name}")
    for column in ("subset", "images", "image AUROC", "pixel AUROC", "AUPRO", "PG0", "F1-max"):
        table.add_column(column, justify="right")
    rows = [("all", metrics)] + sorted(metrics.get("per_defect_type", {}).items())
    for name, m in rows:
        table.add_row(name, str(m["n_images"]), _f(m["image_auroc"]), _f(m.get("pixel_auroc")),
                      _f(m.get("aupro")), _f(m["pg0"]), _f(m["f1_max"]))
    Console().print(table)
    if metrics["excluded_training_side_images"]:
        console.print(f"[yellow]left out {metrics['excluded_training_side_images']} images the model was trained "
                      "or thresholded on[/]")
    at = metrics["at_threshold"]
    console.print(
        f"at the model threshold {metrics['threshold']['value']:.5g}: {at['missed_defects']} missed defects, "
        f"{at['false_alarms']} false alarms; report: {out / 'report.html'}"
    )
