"""``cell calibrate``: calibrate the camera (intrinsics + hand-eye) on a cell; ``cell calibrate board``: print a board.

Examples::

    cell calibrate --cell configs/cells/sim.yaml --out calib.yaml --views 20 --method park
    cell calibrate board --out board.pdf
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from calibration.board_print import write_board
from calibration.calibration_file import save_calibration
from calibration.handeye import HAND_EYE_METHODS
from cell.calibrate import CalibrationConfig, CapturedView, camera_serial, run_calibration, show_board
from cell.config import load_config

#: The repository's calibration config (editable install), so the command works from any folder.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "calibration" / "charuco.yaml"


def _load(config_path: Path, views: int | None, method: str | None) -> CalibrationConfig:
    cfg = load_config(config_path, CalibrationConfig)
    updates = {}
    if views is not None:
        updates["plan"] = cfg.plan.model_copy(update={"views": views})
    if method is not None:
        updates["method"] = method
    return cfg.model_copy(update=updates) if updates else cfg


@click.group("calibrate", invoke_without_command=True)
@click.option("--cell", "cell_path", type=click.Path(dir_okay=False, path_type=Path),
              help="cell config (configs/cells/*.yaml)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="calibration file to write (YAML)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help="calibration config: board, its placement, view plan")
@click.option("--views", type=click.IntRange(5, 500), default=None, help="number of views (overrides the config)")
@click.option("--method", type=click.Choice(sorted(HAND_EYE_METHODS), case_sensitive=False), default=None,
              help="hand-eye method (overrides the config)")
@click.option("--images", "image_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="also save every captured view as PNG in this folder")
@click.pass_context
def command(ctx: click.Context, cell_path: Path | None, out_path: Path | None, config_path: Path,
            views: int | None, method: str | None, image_dir: Path | None) -> None:
    """Calibrate the camera on a cell: plan views of the board, move, capture, detect, calibrate, write a file."""
    if ctx.invoked_subcommand is not None:
        return
    if cell_path is None or out_path is None:
        raise click.UsageError("cell calibrate needs --cell CELL.yaml and --out CALIB.yaml (or the 'board' subcommand)")
    from cell.cell_factory import load_cell  # the composition root; imported only when a cell is needed

    cfg = _load(config_path, views, method)
    cell = load_cell(cell_path)
    T_base_board = cfg.T_base_board
    serial = camera_serial(cell.camera)

    # The sim robot carries its kinematics; for another backend use the nominal UR5 model with the cell's TCP.
    kinematics = getattr(cell.robot, "kinematics", None)
    if kinematics is None:
        from acquisition.sim.kinematics import UR5Kinematics

        kinematics = UR5Kinematics(tcp_offset=getattr(cell.config.robot, "tcp_offset", None))

    def pose_check(pose: np.ndarray, label: str) -> None:
        cell.envelope.check_pose(pose, label)
        kinematics.inverse(pose)

    def progress(i: int, n: int, view: CapturedView) -> None:
        click.echo(f"  view {i}/{n} {view.view_id}: {view.detection.count} corners", err=True)

    with cell:
        if cell.scene is not None:  # the simulated cell shows the board where the config says it lies
            show_board(cell.scene, cfg.board, T_base_board)
        click.echo(f"calibrating {serial} with {cfg.plan.views} views of {cfg.board.describe()} ({cfg.method})", err=True)
        run = run_calibration(
            cell.robot, cell.camera, cfg.board, T_base_board, cell.camera_model, cell.T_flange_cam, cfg.plan,
            camera_serial=serial, method=cfg.method, min_corners=cfg.min_corners, pose_check=pose_check,
            sleep=cell.clock.sleep if cell.clock is not None else time.sleep,
            image_dir=image_dir, progress=progress,
            inverse_kinematics=lambda pose, q: kinematics.inverse(pose, q_near=q),
        )
    save_calibration(run.calibration, out_path)
    cam = run.calibration.camera
    pose = run.calibration.T_flange_cam.to_pose()
    summary = {
        "calibration_id": run.calibration.calibration_id,
        "file": str(out_path),
        "views_used": run.calibration.n_views,
        "rms_px": round(run.intrinsics.rms_px, 4),
        "fx_fy_px": [round(cam.fx, 2), round(cam.fy, 2)],
        "cx_cy_px": [round(cam.cx, 2), round(cam.cy, 2)],
        "T_flange_cam_mm_deg": [round(float(v), 3) for v in np.concatenate([pose[:3] * 1e3, np.degrees(pose[3:])])],
        "board_spread_mm": round(run.hand_eye.spread_mm, 4),
        "board_spread_deg": round(run.hand_eye.spread_deg, 5),
        "outlier_views": run.hand_eye.outlier_views,
    }
    for warning in run.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps(summary, indent=2))


@command.command("board")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="sheet to write: .pdf (exact paper size) or .png (with its DPI)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help="calibration config holding the board spec")
@click.option("--paper", type=click.Choice(["A4", "A3", "A2", "letter"]), default=None,
              help="PDF paper (default: the smallest A size that fits)")
@click.option("--dpi", type=click.IntRange(72, 2400), default=600, show_default=True, help="PNG resolution")
def board_command(out_path: Path, config_path: Path, paper: str | None, dpi: int) -> None:
    """Write a printable ChArUco sheet at true scale, its parameters printed on it."""
    cfg = load_config(config_path, CalibrationConfig)
    kwargs = {"paper": paper} if out_path.suffix.lower() == ".pdf" else {"dpi": dpi}
    write_board(cfg.board, out_path, **kwargs)
    click.echo(f"wrote {out_path}: {cfg.board.describe()}")
