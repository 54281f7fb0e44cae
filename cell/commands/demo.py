"""``cell demo``: the whole cell on the simulation, in one command.

1. capture ``good_parts`` good sheets (the training campaign),
2. train the detector on them (threshold from held-out good parts),
3. inspect ``inspect_parts`` new sheets, about half of them defective, as the line would,
4. evaluate the model on the inspected captures (the simulation knows the truth) and write the report,
5. print the truth x verdict table and where everything is.

Everything lands under ``--out`` (default ``runs/demo``): the capture store, the model directory and the report.
"""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import click
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from acquisition.store import CaptureStore
from cell.campaign import RichCampaignProgress, interrupt_on_signals, run_campaign
from cell.cell_factory import Cell, build_cell, load_campaign_file, load_cell_config
from cell.commands.capture import campaign_identity
from cell.commands.inspect import inspect_on_cell, print_confusion
from cell.config import load_config
from cell.errors import CampaignInterrupted, CellError
from cell.evaluation import evaluate_model
from cell.inspection import InspectConfig
from cell.progress import progress_callback
from cell.training import load_train_config, train_model

DEFAULT_DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


class DemoConfig(BaseModel):
    """configs/demo.yaml: which cell, plan and detector the demo uses, and how many parts."""

    model_config = ConfigDict(extra="forbid")

    cell: Path
    campaign: Path
    detector: Path
    good_parts: int = Field(30, ge=3)
    inspect_parts: int = Field(20, ge=1)
    inspect_defect_rate: float = Field(0.5, ge=0.0, le=1.0)
    sheet_size_m: Optional[tuple[float, float]] = Field(
        None, description="override the cell's sheet size so a small plan covers whole sheets"
    )
    detector_overrides: dict[str, Any] = Field(
        default_factory=dict, description="detector config keys changed for the demo (e.g. a shorter schedule)"
    )
    seed: int = 0


def demo_cell(demo: DemoConfig, cell_path: Path, seed: int, defect_rate: float) -> Cell:
    """The cell of the demo: the cell file, with the demo's sheet size."""
    config = load_cell_config(cell_path)
    if demo.sheet_size_m is not None:
        scene = config.scene.model_copy(
            update={"sheet_width_m": demo.sheet_size_m[0], "sheet_height_m": demo.sheet_size_m[1]}
        )
        config = config.model_copy(update={"scene": scene})
    return build_cell(config, source=str(cell_path), seed=seed, defect_rate=defect_rate)


@contextmanager
def _demo_interrupts(out: Path) -> Iterator[None]:
    """The demo has no --resume: an interrupted capture says so (the next run replaces the folder)."""
    try:
        yield
    except CampaignInterrupted as exc:
        raise CampaignInterrupted(f"demo interrupted during its capture; run `cell demo` again (it replaces {out})",
                                  signum=exc.signum) from None


def _resolve(config_path: Path, path: Path) -> Path:
    """Paths in the demo file are relative to the repository root (the folder above configs/)."""
    return path if path.is_absolute() else config_path.resolve().parent.parent / path


@click.command(name="demo")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_DEMO,
              show_default=True, help="demo description YAML")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="folder for the store, the model and the report (replaced)")
@click.option("--good-parts", type=click.IntRange(min=3), default=None, help="override good training parts")
@click.option("--inspect-parts", type=click.IntRange(min=1), default=None, help="override inspected parts")
@click.option("--set", "overrides", multiple=True, help="override a detector config key: key=value")
def command(config_path: Path, out: Path, good_parts: Optional[int], inspect_parts: Optional[int],
            overrides: tuple[str, ...]) -> None:
    """Capture, train, inspect and evaluate on the simulated cell."""
    from cell.config import parse_overrides

    demo = load_config(config_path, DemoConfig)
    good_parts = good_parts or demo.good_parts
    inspect_parts = inspect_parts or demo.inspect_parts
    cell_path = _resolve(config_path, demo.cell)
    campaign_path = _resolve(config_path, demo.campaign)
    detector_path = _resolve(config_path, demo.detector)
    # every config is read before anything runs, so a bad key fails at once
    train_config = load_train_config(detector_path, {**demo.detector_overrides, **parse_overrides(overrides)},
                                     overrides_source=f"{config_path}: key 'detector_overrides' or --set")
    campaign_file = load_campaign_file(campaign_path)
    console = Console()
    err = Console(stderr=True)
    if out.exists():
        if not (out / ".cell-demo").is_file():
            raise CellError(f"{out}: exists and is not a demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".cell-demo").write_text("written by `cell demo`; replaced by the next run\n", encoding="utf-8")
    store_path, model_dir, report_dir = out / "store", out / "model", out / "report"
    started = time.perf_counter()

    console.rule(f"1/4 capture {good_parts} good parts")
    cell = demo_cell(demo, cell_path, seed=demo.seed, defect_rate=0.0)
    plan = cell.plan(campaign_file.plan)
    with CaptureStore(store_path, create=True) as store, cell, _demo_interrupts(out), interrupt_on_signals():
        summary = run_campaign(
            cell.robot, cell.camera, store, plan, good_parts, campaign="train", envelope=cell.envelope,
            speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, on_new_part=cell.on_new_part,
            config=campaign_identity(cell, campaign_file), progress=RichCampaignProgress(err),
            sim_clock=cell.clock.now if cell.clock is not None else None,
            camera_retries=cell.config.capture.camera_retries, capture_timeout_s=cell.config.capture.timeout_s,
        )
    console.print(f"{summary.captures_new} captures of {good_parts} parts x {len(plan)} poses in {summary.wall_s:.1f} s")

    console.rule("2/4 train")
    with progress_callback("training", err) as progress:
        trained = train_model(train_config, store_path, model_dir, campaigns=["train"], progress=progress,
                              log=lambda m: err.print(f"[dim]{m}"))
    threshold = trained["threshold"]
    console.print(f"{trained['method']} trained in {trained['train_seconds']:.1f} s; threshold "
                  f"{threshold['value']:.5g} ({threshold['policy']})")

    console.rule(f"3/4 inspect {inspect_parts} new parts")
    inspection = inspect_on_cell(
        cell=demo_cell(demo, cell_path, seed=demo.seed + 1, defect_rate=demo.inspect_defect_rate),
        campaign_path=campaign_path, model_dir=model_dir, store_path=store_path,
        parts=inspect_parts, name="inspect", config=InspectConfig(), console=console,
    )

    console.rule("4/4 evaluate")
    print_confusion(console, inspection)
    counts = inspection.confusion()
    if counts.get("good") and counts.get("defective"):
        with progress_callback("scoring", err) as progress:
            metrics = evaluate_model(model_dir, store_path, report_dir, campaigns=["inspect"], progress=progress)
        console.print(
            f"per image: AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
            f"AUPRO {metrics['aupro']:.3f}, PG0 {metrics['pg0']:.2f}"
        )
        part_level = metrics.get("part_level") or {}
        if part_level.get("rules"):
            from cell.commands.evaluate import describe_localisation, part_level_table

            console.print(part_level_table(part_level))
            console.print(describe_localisation(part_level))
            if part_level.get("figures"):
                console.print(f"a part map: {report_dir / part_level['figures'][0]['file']}")
        report = f"{report_dir / 'report.html'}"
    else:
        report = "none (the inspected parts were all of one kind; run with more --inspect-parts)"
    console.print(f"store:  {store_path}\nmodel:  {model_dir}\nreport: {report}")
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
