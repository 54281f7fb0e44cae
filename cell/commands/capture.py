"""``cell capture``: run a capture campaign on a cell into a capture store.

    cell capture --cell configs/cells/sim.yaml --campaign configs/campaigns/sheet_raster.yaml \\
                 --parts 4 --out data/sim-ds [--name NAME] [--resume] [--defect-rate F] [--seed S]

The campaign's name defaults to the campaign file's stem; its parts are ``<name>-0001`` ... A campaign
that already exists in the store is refused unless ``--resume`` is given, which captures only what is
missing (with the same cell and campaign settings; ``--parts`` may grow).
"""
from __future__ import annotations

from pathlib import Path
import sys
from typing import Any, Callable, Optional

import click
from rich.console import Console
from rich.table import Table

from acquisition.errors import RobotError, StoreError
from acquisition.store import CaptureStore
from cell.campaign import CampaignSummary, RichCampaignProgress, interrupt_on_signals, run_campaign
from cell.cell_factory import Cell, CampaignFile, load_campaign_file, load_cell
from cell.errors import CampaignError


def campaign_identity(cell: Cell, campaign_file: CampaignFile) -> dict[str, Any]:
    """What must not change between a campaign and its resume: the plan, the scene, the seed and the
    devices' settings (injected faults, clock pace, retries and the envelope may change)."""
    robot = cell.config.robot.model_dump(mode="json", exclude={"faults"})
    camera = cell.config.camera.model_dump(mode="json", exclude={"faults"})
    return {
        "cell": cell.config.name,
        "seed": cell.config.seed,
        "robot": robot,
        "camera": camera,
        "scene": cell.config.scene.model_dump(mode="json"),
        "plan": campaign_file.plan.model_dump(mode="json"),
        "geometry": cell.describe(),
    }


def operator_recovery(console: Console, robot: Any) -> Optional[Callable[[RobotError, str, str], bool]]:
    """On a real cell run interactively: a robot fault pauses the campaign and asks the operator to clear its
    cause; Enter recovers the robot (unlock, restart the control script) and retries the pose, 'q' stops the
    campaign (resume later with --resume). Unattended (no terminal): None, so a fault stops the campaign."""
    if not sys.stdin.isatty():
        return None

    def on_fault(error: RobotError, part_id: str, pose_id: str) -> bool:
        console.print(f"[yellow]paused[/] at part {part_id} pose {pose_id}: {type(error).__name__}: {error}")
        while True:
            answer = click.prompt("clear the cause, then Enter to recover and continue, or q to stop",
                                  default="", show_default=False, err=True)
            if answer.strip().lower() == "q":
                return False
            try:
                robot.recover()
            except RobotError as exc:
                console.print(f"[red]recovery failed:[/] {exc}")
                continue
            console.print("[green]recovered[/]: retrying the pose")
            return True

    return on_fault


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"campaign {summary['campaign']}: {summary['status']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("parts requested", summary["parts_requested"]),
        ("poses per part", summary["poses_per_part"]),
        ("captures in store", f"{summary['captures_in_store']} of {summary['captures_expected']}"),
        ("new this run", summary["captures_new"]),
        ("already stored (resume)", summary["captures_skipped"]),
        ("sim masks stored", summary["masks_stored"]),
        ("failed poses", len(summary["failed_poses"])),
        ("camera retries", summary["camera_retries"]),
        ("wall time", f"{summary['wall_s']:.1f} s"),
        ("captures / s", f"{summary['captures_per_s']:.2f}"),
    ]
    if summary.get("sim_s") is not None:
        rows.append(("sim time", f"{summary['sim_s']:.1f} s"))
    for what, value in rows:
        table.add_row(what, str(value))
    return table


@click.command(name="capture")
@click.option("--cell", "cell_path", type=click.Path(path_type=Path), required=True, help="cell config YAML")
@click.option("--campaign", "campaign_path", type=click.Path(path_type=Path), required=True,
              help="campaign YAML (pose plan)")
@click.option("--parts", type=click.IntRange(min=1), required=True, help="number of parts to capture")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="capture store folder (created when missing)")
@click.option("--name", default=None, help="campaign name in the store (default: the campaign file's stem)")
@click.option("--resume", is_flag=True, help="continue an interrupted campaign: capture only what is missing")
@click.option("--defect-rate", type=float, default=None, help="share of defective simulated parts, 0..1")
@click.option("--seed", type=int, default=None, help="override the cell's seed")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="calibration file in force (overrides the cell file's 'calibration:'); its id is recorded")
def command(
    cell_path: Path,
    campaign_path: Path,
    parts: int,
    out_dir: Path,
    name: Optional[str],
    resume: bool,
    defect_rate: Optional[float],
    seed: Optional[int],
    calibration: Optional[Path],
) -> None:
    """Run a capture campaign: move through the pose plan over PARTS parts and store every frame."""
    cell = load_cell(cell_path, seed=seed, defect_rate=defect_rate, calibration=calibration)
    campaign_file = load_campaign_file(campaign_path)
    name = name or campaign_path.stem
    plan = cell.plan(campaign_file.plan, source=str(campaign_path))
    console = Console()
    progress_console = Console(stderr=True)
    with CaptureStore(out_dir, create=True) as store, cell:
        progress_console.print(
            f"campaign [bold]{name}[/]: {parts} part(s) x {len(plan)} poses -> {store.root}"
            + (" (resuming)" if resume else "")
        )
        error: Optional[CampaignError] = None
        summary: Optional[CampaignSummary] = None
        try:
            with interrupt_on_signals():  # Ctrl+C / SIGTERM: the campaign is closed as interrupted
                summary = run_campaign(
                    cell.robot, cell.camera, store, plan, parts,
                    campaign=name, envelope=cell.envelope,
                    speed=campaign_file.plan.speed, accel=campaign_file.plan.accel,
                    on_new_part=cell.on_new_part, resume=resume,
                    config=campaign_identity(cell, campaign_file),
                    camera_retries=cell.config.capture.camera_retries,
                    capture_timeout_s=cell.config.capture.timeout_s,
                    progress=RichCampaignProgress(progress_console),
                    sim_clock=cell.clock.now if cell.clock is not None else None,
                    calibration_id=cell.calibration_id,
                    on_robot_fault=operator_recovery(progress_console, cell.robot) if cell.scene is None else None,
                )
            data = summary.to_dict()
        except CampaignError as exc:
            error = exc
            try:
                data = store.campaign_status(name).summary
            except StoreError:
                data = None
        if data is not None:
            console.print(_summary_table(data))
            for failure in data["failed_poses"][:10]:
                console.print(f"failed: part {failure['part_id']} pose {failure['pose_id']}: {failure['reason']}")
            if data["failed_poses"]:
                console.print("run again with --resume to retry the failed poses")
            console.print(f"images: {store.root / 'images' / name}")
            summary_file = store.root / "campaigns" / name / "summary.json"
            if summary_file.is_file():
                console.print(f"summary: {summary_file}")
        if error is not None:
            raise error
        if data is not None and data["failed_poses"]:
            raise CampaignError(
                f"campaign {name!r}: {len(data['failed_poses'])} pose(s) failed (listed above); "
                "run again with --resume to retry them"
            )
