"""``cell inspect``: unattended inspection of new parts on the cell with a trained model.

    cell inspect --cell configs/cells/sim.yaml --campaign configs/campaigns/demo.yaml \\
                 --model models/simplenet --store DATASET --parts 20 [--on-error continue|stop] \\
                 [--signal digital_output,opcua,mqtt] [--serve [--port 8766]] [--allow-remote]

Each part is judged on its part map (every pose's anomaly map projected onto the part and fused, see
:mod:`cell.part_map`) with the model's part threshold (``part_threshold.json``, or ``--part-threshold``). One
live line per part (``NOK  2 defects, largest 14 mm2 at (120.5, 45.0) mm``); every part gets a row in the
store with its verdict, defects (mm), part threshold, fusion rule, coverage, per-pose scores, the part-map
overlay PNG and the raw fused map (.npy) and, for NOK parts, per-pose heatmaps. A plan that does not cover the
part is reported before the line starts. ``--signal`` names the line signals that get each
result (:mod:`cell.signals`), ``--serve`` the live line page (:mod:`cell.line_view`); their counters (sent,
dropped, failed, rejected) go into the campaign's summary in the store under ``signals``. Exit code 0 when
every part was inspected (OK or NOK), 3 when some part ended in ``error`` (a fault never counts as OK).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import click
from rich.console import Console

from acquisition.store import CaptureStore
from cell.cell_factory import Cell, load_campaign_file, load_cell
from cell.commands.options import finite_threshold
from cell.errors import CellError
from cell.inspection import InspectConfig, InspectionSummary, PartJudge, PartResult, run_inspection
from cell.local_http import check_bind_host
from cell.part_threshold import PART_THRESHOLD_FILE, read_part_threshold
from cell.signals import LineJob, LineSignals, build_sinks, parse_signal_kinds
from cell.runtime_models import load_model_for_runtime

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


@dataclass
class LineOptions:
    """How ``cell inspect`` talks to the line: the ``--signal`` kinds and the live page (``--serve``)."""

    signals: list[str] = field(default_factory=list)
    serve: bool = False
    host: str = "127.0.0.1"
    port: int = 8766
    allow_remote: bool = False


def part_judge(cell: Cell, campaign_file: Any, plan: list[Any], model_dir: Path,
               part_threshold_override: Optional[float], console: Console) -> PartJudge:
    """How the line decides: the part map with the model's part threshold (or ``--part-threshold``), the
    camera model and mount in force, and the plan's part outline. Warns when the plan does not cover the
    part (or, on the simulated cell, the sheets are larger than the plan's part)."""
    from cell.part_map import PartFrame, PartMapConfig, planned_coverage
    from detectors.thresholds import ThresholdDecision

    if cell.camera_model is None or cell.T_flange_cam is None:
        raise CellError(f"{cell.source}: the part map needs the camera model and T_flange_cam: set 'calibration:' "
                        "in the cell file (run `cell calibrate`)")
    stored = None
    if part_threshold_override is None or (model_dir / PART_THRESHOLD_FILE).is_file():
        stored = read_part_threshold(model_dir)
    try:
        config = PartMapConfig.model_validate(stored.part_map if stored is not None else {})
    except ValueError as exc:
        raise CellError(f"{model_dir / PART_THRESHOLD_FILE}: key 'part_map': {str(exc).splitlines()[-1]}") from None
    threshold = (ThresholdDecision(value=float(part_threshold_override), policy="manual")
                 if part_threshold_override is not None else stored.decision)  # type: ignore[union-attr]
    part = PartFrame.from_plan(campaign_file.plan)
    coverage = planned_coverage(plan, cell.camera_model, cell.T_flange_cam, part, config)
    if coverage < config.min_coverage:
        console.print(f"[yellow]warning:[/] the plan's views cover only {coverage:.1%} of its "
                      f"{part.size_m[0]:.3g} x {part.size_m[1]:.3g} m part: every part will end in error")
    if cell.scene is not None:
        sheet = (cell.scene.config.sheet_width_m, cell.scene.config.sheet_height_m)
        if sheet[0] > part.size_m[0] + 1e-9 or sheet[1] > part.size_m[1] + 1e-9:
            console.print(f"[yellow]warning:[/] the simulated sheets are {sheet[0]:.3g} x {sheet[1]:.3g} m but the "
                          f"plan inspects a {part.size_m[0]:.3g} x {part.size_m[1]:.3g} m part: the rest of each "
                          "sheet is not inspected (use a plan whose part_size_m matches the sheets)")
    return PartJudge(threshold=threshold, camera=cell.camera_model, T_flange_cam=cell.T_flange_cam, part=part,
                     config=config)


def _cell_folder(cell: Cell) -> Optional[Path]:
    return None if cell.source.startswith("<") else Path(cell.source).parent


def build_line(cell: Cell, options: LineOptions, store_path: Path, console: Console) -> tuple[LineSignals, Any]:
    """The run's :class:`LineSignals` (sinks built, not started) and the live page's server (or None). Every
    setting is checked here, before the model is loaded or the robot moves."""
    from cell.line_view import LineViewServer, LineViewSink
    from cell.line_view.server import WHAT as PAGE

    if options.serve:
        check_bind_host(options.host, options.allow_remote, PAGE)
    view = LineViewSink(store_path) if options.serve else None

    def report(message: str) -> None:
        console.print(f"[yellow]signal[/] {message}")
        if view is not None:
            view.note(message)

    sinks = build_sinks(
        options.signals, robot=cell.robot, opcua=cell.config.opcua, mqtt=cell.config.mqtt,
        allow_remote=options.allow_remote, base_dir=_cell_folder(cell), part_timeout_s=cell.part_feed.timeout_s,
        report=report,
    )
    if cell.part_feed.mode == "opcua" and "opcua" not in options.signals:
        raise CellError(f"{cell.source}: part_feed.mode 'opcua' needs the OPC UA server: add opcua to --signal")
    server = None
    if view is not None:
        sinks.append(view)
        server = LineViewServer(view, options.host, options.port, allow_remote=options.allow_remote)
    return LineSignals(sinks), server


def print_signal_health(console: Console, health: dict[str, Any]) -> None:
    for name, h in health.items():
        if name == "line_view":
            continue
        trouble = h["failed"] or h["dropped"] or h["rejected"]
        console.print(f"{'[yellow]' if trouble else ''}{name}: sent {h['sent']}, dropped {h['dropped']}, "
                      f"failed {h['failed']}, rejected {h['rejected']}{'[/]' if trouble else ''}")


def inspect_on_cell(
    *,
    cell: Cell,
    campaign_path: Path,
    model_dir: Path,
    store_path: Path,
    parts: int,
    name: Optional[str],
    config: InspectConfig,
    line: Optional[LineOptions] = None,
    threshold_override: Optional[float] = None,
    part_threshold_override: Optional[float] = None,
    device: str = "auto",
    runtime: str = "torch",
    console: Console,
) -> InspectionSummary:
    """Load everything, then run the loop (shared by ``cell inspect`` and ``cell demo``).

    ``device``: where the model runs (``auto``: a GPU when there is one), whatever it was trained on.
    ``runtime``: ``torch`` | ``onnx`` | ``openvino`` (an exported model: :mod:`cell.runtime_models`)."""
    signals, page = build_line(cell, line or LineOptions(), store_path, console)
    campaign_file = load_campaign_file(campaign_path)
    campaign = name or f"inspect-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    plan = cell.plan(campaign_file.plan)
    judge = part_judge(cell, campaign_file, plan, model_dir, part_threshold_override, console)  # before the model loads
    model = load_model_for_runtime(model_dir, runtime=runtime, device=device, threshold_override=threshold_override)
    detector, spec, threshold = model.detector, model.spec, model.threshold
    console.print(
        f"inspecting {parts} parts x {len(plan)} poses with {model_dir} (part threshold {judge.threshold.value:.5g}, "
        f"{judge.threshold.policy}, fusion {judge.config.describe()}, edge band {judge.config.edge_mm:g} mm); campaign {campaign} in {store_path}"
    )
    # The cell file's capture settings (camera timeout, retries) hold on the line as in a campaign.
    config = config.model_copy(update={"camera_retries": cell.config.capture.camera_retries,
                                       "capture_timeout_s": cell.config.capture.timeout_s})
    signals.set_job(LineJob(campaign=campaign, model=str(model_dir), threshold=judge.threshold.value))
    with CaptureStore(store_path, create=True) as store:
        try:
            with signals, cell:
                opcua = signals.get("opcua")
                if opcua is not None:
                    cell.line_feed = opcua.wait_for_part  # type: ignore[attr-defined]
                    console.print(f"OPC UA server at {opcua.config.endpoint}")  # type: ignore[attr-defined]
                if page is not None:
                    page.start_background()
                    console.print(f"live line page at {page.url}")
                summary = run_inspection(
                    robot=cell.robot, camera=cell.camera, store=store, plan=plan,
                    speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, envelope=cell.envelope,
                    parts=parts, campaign=campaign, detector=detector, spec=spec, threshold=threshold,
                    config=config, on_new_part=cell.on_new_part, signal=signals,
                    on_part=lambda r, i, n: print_part_line(console, r, i, n), model_dir=model_dir,
                    calibration_id=cell.calibration_id, judge=judge, feed_waits=cell.feed_waits,
                    campaign_config={"plan": campaign_file.plan.model_dump(mode="json"), "geometry": cell.describe()},
                )
        finally:
            cell.line_feed = None
            if page is not None:
                page.stop()
        if signals.sinks:
            # After the sinks closed (queues flushed): the final counters go with the campaign's summary.
            health = signals.health()
            recorded = store.campaign_status(campaign).summary or {}
            store.finish_campaign(campaign, "stopped" if summary.stopped_early else "completed",
                                  {**recorded, "signals": health})
            print_signal_health(console, health)
        return summary


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
@click.option("--threshold", type=float, default=None, callback=finite_threshold,
              help="override the model's per-image threshold (policy manual; a finite number)")
@click.option("--part-threshold", type=float, default=None, callback=finite_threshold,
              help="the part threshold on the fused part map (policy manual; a finite number) instead of the "
                   "model's part_threshold.json")
@click.option("--defect-rate", type=float, default=None, help="simulated cell: share of defective parts")
@click.option("--seed", type=int, default=None, help="simulated cell: override the seed")
@click.option("--signal", "signal_kinds", default="none", show_default=True,
              help="line signals, comma-separated: digital_output, opcua, mqtt (the cell file's opcua: / mqtt: "
                   "sections configure them)")
@click.option("--serve", is_flag=True, help="serve the live line page (local only unless --allow-remote)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address of the live line page")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True,
              help="port of the live line page (0: any free port)")
@click.option("--allow-remote", is_flag=True,
              help="allow a non-local bind of the live page and of the OPC UA endpoint")
@click.option("--device", default="auto", show_default=True,
              help="where the model runs: auto | cpu | cuda[:N] (whatever it was trained on)")
@click.option("--runtime", type=click.Choice(["torch", "onnx", "openvino"]), default="torch", show_default=True,
              help="torch, or an exported model (MODEL itself or MODEL/exported/RUNTIME; see `cell export`)")
def command(cell_path: Path, campaign_path: Path, model_dir: Path, store_path: Path, parts: int,
            name: Optional[str], on_error: str, threshold: Optional[float], part_threshold: Optional[float],
            defect_rate: Optional[float],
            seed: Optional[int], signal_kinds: str, serve: bool, host: str, port: int, allow_remote: bool,
            device: str, runtime: str) -> int:
    """Inspect new parts: OK / NOK / error per part, recorded in the store and signalled to the line."""
    console = Console()
    line = LineOptions(signals=parse_signal_kinds(signal_kinds), serve=serve, host=host, port=port,
                       allow_remote=allow_remote)
    summary = inspect_on_cell(
        cell=load_cell(cell_path, seed=seed, defect_rate=defect_rate), campaign_path=campaign_path,
        model_dir=model_dir, store_path=store_path, parts=parts, name=name,
        config=InspectConfig(on_error=on_error), line=line, threshold_override=threshold,
        part_threshold_override=part_threshold, device=device, runtime=runtime, console=console,
    )
    counts = summary.counts()
    console.print(f"OK {counts['OK']}, NOK {counts['NOK']}, error {counts['error']}")
    if summary.stopped_early:
        console.print(f"[yellow]stopped early:[/] {summary.stopped_early}")
    return EXIT_PART_ERRORS if counts["error"] else 0
