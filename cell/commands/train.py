"""``cell train``: train a detector on a capture store or an MVTec-layout folder; write a model directory.

    cell train --detector configs/detectors/simplenet.yaml --data DATASET --out models/simplenet \\
               [--campaign NAME ...] [--set key=value ...] [--device auto|cpu|cuda] [--force]
"""
from __future__ import annotations

from pathlib import Path

import click

# Everything heavy (rich, pydantic, torch through cell.training) is imported inside the command, so that
# `cell train --help` answers at once (tests/cell/test_cli.py checks that it does not import torch).


@click.command(name="train")
@click.option("--detector", "detector_config", type=click.Path(path_type=Path), required=True,
              help="detector config YAML (configs/detectors/<method>.yaml)")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="capture store or MVTec-layout folder (its train/good side is used)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="model directory to write")
@click.option("--campaign", "campaigns", multiple=True, help="only these campaigns of a capture store")
@click.option("--set", "overrides", multiple=True, help="override a detector config key: key=value")
@click.option("--device", default=None, help="auto (CUDA when present), cpu or cuda")
@click.option("--force", is_flag=True, help="replace an existing model directory")
def command(detector_config: Path, data: Path, out: Path, campaigns: tuple[str, ...], overrides: tuple[str, ...],
            device: str | None, force: bool) -> None:
    """Train a detector on good parts and choose its threshold on held-out training-side data."""
    from rich.console import Console

    from cell.config import parse_overrides
    from cell.progress import progress_callback
    from cell.training import load_train_config, train_model

    console = Console(stderr=True)
    values = parse_overrides(overrides)
    if device is not None:
        values["device"] = device
    train_config = load_train_config(detector_config, values)  # bad keys fail before any progress display
    with progress_callback("training", console) as progress:
        summary = train_model(
            train_config, data, out, campaigns=campaigns or None, force=force,
            progress=progress, log=lambda m: console.print(f"[dim]{m}"),
        )
    threshold = summary["threshold"]
    console.print(
        f"[green]trained[/] {summary['method']} on {summary['train_images']} images "
        f"({summary['train_inputs']} inputs) in {summary['train_seconds']:.1f} s; "
        f"threshold {threshold['value']:.5g} ({threshold['policy']})"
    )
    part = summary.get("part_threshold")
    if part:
        console.print(f"part threshold {part['value']:.5g} ({part['policy']}, fusion {part['part_map'].get('fusion')}) "
                      f"on {part['stats'].get('n_good', 0)} held-out good parts")
    click.echo(str(out))
