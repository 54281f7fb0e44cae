"""``cell inspect``: unattended inspection of new parts on the cell with a trained model.

    cell inspect --cell configs/cells/sim.yaml --campaign configs/campaigns/demo.yaml \\
                 --model models/simplenet --store DATASET --parts 20 [--on-error continue|stop]

One live line per part (verdict, worst pose, score vs threshold); every part gets a row in the store with
its verdict, per-pose scores and, for NOK parts, heatmaps. Exit code 0 when every part was inspected
(OK or NOK), 3 when some part ended in ``error`` (a fault never counts as OK).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import click
from rich.console import Console

from acquisition.store import CaptureStore
from cell.cell_factory import Cell, load_campaign_file, load_cell
from cell.inspection import InspectConfig, InspectionSummary, PartResult, run_inspection
from cell.line_signal import SignalConfig, make_signal
from cell.training import load_trained_model

EXIT_PART_ERRORS = 3


def print_part_line(console: Console, result: PartResult, index: int, total: int) -> None:
    """The live line of one part."""
    colour = {"OK": "green", "NOK": "red", "error": "yellow"}[result.verdict]
    truth = f" (truth: {result.truth})" if result.truth else ""
    console.print(
        f"[{index:>3}/{total}] {result.part_id}  [{colour}]{result.verdict:<5}[/]  {result.reason}"
        f"  {result.seconds:.1f} s{truth}"
    )


def print_confusion(console: Console, summary: InspectionSummary) -> None:
    from rich.table import Table

    table = Table(title="inspection: truth x verdict")
    table.add_column("truth")
    for verdict in ("OK", "NOK", "error"):
        table.add_column(verdict, justify="right")
    for truth, row in sorted(summary.confusion().items()):
        table.add_row(truth, *(str(row[v]) for v in ("OK", "NOK", "error")))
    console.print(table)


def inspect_on_cell(
    *,
    cell: Cell,
    campaign_path: Path,
    model_dir: Path,
    store_path: Path,
    parts: int,
    name: Optional[str],
    config: InspectConfig,
    signal_config: SignalConfig,
    threshold_override: Optional[float] = None,
    device: str = "auto",
    console: Console,
) -> InspectionSummary:
    """Load everything, then run the loop (shared by ``cell inspect`` and ``cell demo``).

    ``device``: where the model runs (``auto``: a GPU when there is one), whatever it was trained on."""
    model = load_trained_model(model_dir, device=device, threshold_override=threshold_override)
    detector, spec, threshold = model.detector, model.spec, model.threshold
    campaign_file = load_campaign_file(campaign_path)
    campaign = name or f"inspect-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    plan = cell.plan(campaign_file.plan)
    console.print(
        f"inspecting {parts} parts x {len(plan)} poses with {model_dir} "
        f"(threshold {threshold.value:.5g}, {threshold.policy}); campaign {campaign} in {store_path}"
    )
    # The cell file's capture settings (camera timeout, retries) hold on the line as in a campaign.
    config = config.model_copy(update={"camera_retries": cell.config.capture.camera_retries,
                                       "capture_timeout_s": cell.config.capture.timeout_s})
    with CaptureStore(store_path, create=True) as store, cell:
        return run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan,
            speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, envelope=cell.envelope,
            parts=parts, campaign=campaign, detector=detector, spec=spec, threshold=threshold, config=config,
            on_new_part=cell.on_new_part, signal=make_signal(signal_config, cell.robot),
            on_part=lambda r, i, n: print_part_line(console, r, i, n), model_dir=model_dir,
            calibration_id=cell.calibration_id,
        )


@click.command(name="inspect")
@click.option("--cell", "cell_path", type=click.Path(path_type=Path), required=True, help="cell config YAML")
@click.option("--campaign", "campaign_path", type=click.Path(path_type=Path), required=True,
              help="campaign YAML (the pose plan used per part)")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="model directory")
@click.option("--store", "store_path", type=click.Path(path_type=Path), required=True,
              help="capture store to record captures, verdicts and heatmaps (created when missing)")
@click.option("--parts", type=click.IntRange(min=1), required=True, help="number of parts to inspect")
@click.option("--name", default=None, help="inspection campaign name (default inspect-<date-time>)")
@click.option("--on-error", type=click.Choice(["continue", "stop"]), default="continue",
              help="after a part ends in error: recover and go on, or stop")
@click.option("--threshold", type=float, default=None, help="override the model's threshold (policy manual)")
@click.option("--defect-rate", type=float, default=None, help="simulated cell: share of defective parts")
@click.option("--seed", type=int, default=None, help="simulated cell: override the seed")
@click.option("--signal", type=click.Choice(["none", "digital_output"]), default="none",
              help="signal verdicts to the line on the robot's digital outputs")
@click.option("--device", default="auto", show_default=True,
              help="where the model runs: auto | cpu | cuda[:N] (whatever it was trained on)")
def command(cell_path: Path, campaign_path: Path, model_dir: Path, store_path: Path, parts: int,
            name: Optional[str], on_error: str, threshold: Optional[float], defect_rate: Optional[float],
            seed: Optional[int], signal: str, device: str) -> int:
    """Inspect new parts: OK / NOK / error per part, recorded in the store."""
    console = Console()
    summary = inspect_on_cell(
        cell=load_cell(cell_path, seed=seed, defect_rate=defect_rate), campaign_path=campaign_path,
        model_dir=model_dir, store_path=store_path, parts=parts, name=name,
        config=InspectConfig(on_error=on_error), signal_config=SignalConfig(kind=signal),
        threshold_override=threshold, device=device, console=console,
    )
    counts = summary.counts()
    console.print(f"OK {counts['OK']}, NOK {counts['NOK']}, error {counts['error']}")
    if summary.stopped_early:
        console.print(f"[yellow]stopped early:[/] {summary.stopped_early}")
    return EXIT_PART_ERRORS if counts["error"] else 0
