"""``cell eval``: score a test split once; write metrics.json, scores.csv, roc.png and report.html.

    cell eval --model models/simplenet --data DATASET --out reports/simplenet [--campaign NAME ...]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.table import Table

# rich and torch (through cell.evaluation) are imported inside the command: `cell eval --help` stays fast.


def part_level_table(section: dict) -> Table:
    """The part-level table: each rule's part AUROC and false rejects at zero miss, and the localisation."""
    from rich.table import Table

    table = Table(title=f"part level: {section['n_good_parts']} good, {section['n_defective_parts']} defective parts "
                        f"(fusion {section.get('fusion')})")
    for column in ("rule", "part AUROC", "false rejects at zero miss", "at the part threshold"):
        table.add_column(column, justify="right")
    at = section.get("at_part_threshold")
    for name, rule in section["rules"].items():
        zm = rule["at_zero_miss"]
        frr = "n/a" if zm.get("false_reject_rate") is None else f"{zm['false_rejects']}/{zm['good_parts']} ({zm['false_reject_rate']:.0%})"
        here = ""
        if name == "part_map" and at is not None:
            here = f"{at['missed_defective_parts']} missed, {at['false_rejects']} false rejects"
        table.add_row("fused part map" if name == "part_map" else "worst view (old rule)", _f(rule["auroc"]), frr, here)
    return table


def describe_localisation(section: dict) -> str:
    loc = section.get("localisation") or {}
    if not loc:
        return "localisation: n/a"
    err = (loc.get("centroid_error_mm") or {}).get("median")
    hit = "n/a" if loc.get("hit_rate") is None else f"{loc['hit_rate']:.0%}"
    fdg = loc.get("false_defects_per_good_part")
    return (f"localisation ({section.get('localisation_threshold_source')}): {loc['hit']}/{loc['true_defects']} true "
            f"defects hit ({hit}), {('n/a' if fdg is None else f'{fdg:.2f}')} false defects per good part, "
            f"median centroid error {('n/a' if err is None else f'{err:.1f} mm')}")


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
    part_level = metrics.get("part_level")
    if part_level and part_level.get("rules"):
        Console().print(part_level_table(part_level))
        console.print(describe_localisation(part_level))
    if metrics["excluded_training_side_images"]:
        console.print(f"[yellow]left out {metrics['excluded_training_side_images']} images the model was trained "
                      "or thresholded on[/]")
    at = metrics["at_threshold"]
    console.print(
        f"at the model threshold {metrics['threshold']['value']:.5g}: {at['missed_defects']} missed defects, "
        f"{at['false_alarms']} false alarms; report: {out / 'report.html'}"
    )
