"""``cell dataset``: look into a capture store and export it in the MVTec AD layout.

    cell dataset info DATASET
    cell dataset export DATASET --mvtec OUT [--campaign NAME ...] [--test-fraction F] [--seed S]
                                            [--train-campaign NAME ...] [--overwrite]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.table import Table

from acquisition.errors import StoreError
from acquisition.store import PART_LABELS, CaptureStore


@click.group(name="dataset")
def command() -> None:
    """Inspect and export capture datasets (capture stores)."""


@command.command(name="info")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the facts as JSON instead of tables")
def info(dataset: Path, as_json: bool) -> None:
    """Counts per label, campaigns, defect types, and a full integrity check (every file's sha256).

    Exits non-zero when the check finds a missing or altered file. Opens the store read-only (it may lie on
    a read-only mount); a missing or wiped manifest is an error.
    """
    with CaptureStore(dataset, read_only=True) as store:
        campaigns = store.campaigns()
        parts = store.parts()
        report = store.verify()
        defect_types = store.defect_types()
    label_counts = {label: sum(1 for p in parts if p.label == label) for label in PART_LABELS}
    facts = {
        "dataset": str(dataset),
        "campaigns": [
            {"name": c.name, "status": c.status, "captures": c.n_captures, "parts": c.n_parts, "updated": c.updated}
            for c in campaigns
        ],
        "parts": label_counts,
        "parts_labelled": sum(1 for p in parts if p.labelled),
        "defective_without_masks": [p.part_id for p in parts if p.label == "defective" and not p.labelled],
        "captures": report.n_captures,
        "masks": report.n_masks,
        "defect_types": defect_types,
        "verify": {"ok": report.ok, "problems": report.problems, "orphans": len(report.orphans)},
    }
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        console = Console()
        table = Table(title=f"campaigns in {dataset}")
        for col in ("campaign", "status", "parts", "captures", "updated"):
            table.add_column(col)
        for c in campaigns:
            table.add_row(c.name, c.status, str(c.n_parts), str(c.n_captures), c.updated)
        console.print(table)
        labels = Table(title="parts")
        for col in ("good", "defective", "unlabelled", "labelled", "captures", "masks", "defect types"):
            labels.add_column(col)
        labels.add_row(
            str(label_counts["good"]), str(label_counts["defective"]), str(label_counts["unlabelled"]),
            str(facts["parts_labelled"]), str(report.n_captures), str(report.n_masks), ", ".join(defect_types) or "-",
        )
        console.print(labels)
        if report.ok:
            orphan_note = f" ({len(report.orphans)} unreferenced file(s), harmless)" if report.orphans else ""
            console.print(f"verify: ok, {report.n_captures} images and {report.n_masks} masks match their sha256{orphan_note}")
    if not report.ok:
        shown = "; ".join(report.problems[:5]) + (" ..." if len(report.problems) > 5 else "")
        raise StoreError(f"{dataset}: {len(report.problems)} damaged file(s) or manifest row(s): {shown}")


def _good_test_fraction(test_fraction: Optional[float], train_campaigns: tuple[str, ...]) -> float:
    """``--test-fraction`` (default 0.2); with ``--train-campaign`` the split is by campaign, so giving both is
    a usage error rather than a silently ignored option."""
    if train_campaigns and test_fraction is not None:
        raise click.UsageError("--test-fraction and --train-campaign exclude each other (the split is by "
                               "campaign with --train-campaign, by part with --test-fraction)")
    return 0.2 if test_fraction is None else test_fraction


@command.command(name="export")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--mvtec", "out_dir", type=click.Path(path_type=Path), required=True,
              help="output folder of the MVTec AD layout (must not exist unless --overwrite)")
@click.option("--campaign", "campaigns", multiple=True, help="export only these campaigns (repeatable)")
@click.option("--test-fraction", type=float, default=None,
              help="share of good parts held out for test/good (split by part; default 0.2)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the good-part split")
@click.option("--train-campaign", "train_campaigns", multiple=True,
              help="split by campaign instead: good parts of these campaigns train, the others test")
@click.option("--overwrite", is_flag=True, help="replace OUT when it is a previous export")
def export(
    dataset: Path,
    out_dir: Path,
    campaigns: tuple[str, ...],
    test_fraction: Optional[float],
    seed: int,
    train_campaigns: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write the labelled captures of DATASET as train/good, test/<defect>, ground_truth/<defect>.

    <defect> is a mask's one region type, or "combined" when its regions have several types (their type
    maps go to region_types.npz, their types to export.json). Reads DATASET read-only.
    """
    with CaptureStore(dataset, read_only=True) as store:
        report = store.export_mvtec(
            out_dir,
            list(campaigns) if campaigns else None,
            test_good_fraction=_good_test_fraction(test_fraction, train_campaigns),
            seed=seed,
            train_campaigns=list(train_campaigns) if train_campaigns else None,
            overwrite=overwrite,
        )
    console = Console()
    table = Table(title=f"MVTec export -> {out_dir}")
    table.add_column("folder")
    table.add_column("images", justify="right")
    for folder in sorted(report.counts):
        table.add_row(folder, str(report.counts[folder]))
    console.print(table)
    if report.skipped:
        console.print("skipped: " + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(report.skipped.items())))
    console.print(f"wrote {sum(report.counts.values())} images to {out_dir} (provenance in {out_dir / 'export.json'})")
