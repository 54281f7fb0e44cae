"""``cell label DATASET``: the labelling app over a capture store, in the browser."""
from __future__ import annotations

import os
import signal
import webbrowser
from pathlib import Path
from typing import Optional

import click

from acquisition.store import CaptureStore
from cell.labelling.api import LabellingApp
from cell.labelling.carry import GeometryResolver
from cell.labelling.server import WHAT, LabellingHTTPServer, check_bind_host
from cell.local_http import remote_bind_warning


def store_is_writable(dataset: Path) -> bool:
    """False when the dataset folder or its manifest cannot be written (a read-only mount or share, or no
    permission): the app then opens it read-only instead of failing to open it."""
    manifest = dataset / "manifest.sqlite"
    return os.access(dataset, os.W_OK) and (not manifest.exists() or os.access(manifest, os.W_OK))


def build_app(
    dataset: Path,
    model_dir: Optional[Path] = None,
    calibration: Optional[Path] = None,
    plane_z_mm: Optional[float] = None,
    superpixel_size: int = 32,
    read_only: bool = False,
) -> LabellingApp:
    """Open the store and wire the app: carry-over geometry and, with ``model_dir``, review mode.
    ``read_only``: open the store read-only (browse and review; every edit is refused with 403)."""
    store = CaptureStore(dataset, create=False, read_only=read_only)
    try:
        camera = T_flange_cam = None
        source = "calibration"
        if calibration is not None:
            from calibration.calibration_file import load_calibration

            calib = load_calibration(calibration)
            camera, T_flange_cam = calib.camera, calib.T_flange_cam
            source = f"calibration {calib.calibration_id} ({calibration})"

        def campaign_config(name: str):
            try:
                return store.campaign_status(name).config
            except Exception:  # noqa: BLE001 - an unknown campaign simply has no config
                return None

        resolver = GeometryResolver(
            campaign_config, camera, T_flange_cam,
            plane_z_m=None if plane_z_mm is None else plane_z_mm * 1e-3, source=source,
        )
        provider = None
        if model_dir is not None:
            from cell.labelling.review import DetectorScoreProvider

            provider = DetectorScoreProvider(model_dir)
        return LabellingApp(store, geometry=resolver, score_provider=provider, superpixel_size_px=superpixel_size)
    except BaseException:
        store.close()
        raise


@click.command("label")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (local only unless --allow-remote).")
@click.option("--allow-remote", is_flag=True, help="Allow binding to a non-local address (no authentication!).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser window.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model directory from `cell train`: enables review mode (heatmaps, disagreements).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Calibration file (camera model + T_flange_cam) for carrying masks across poses.")
@click.option("--plane-z", "plane_z_mm", type=float, default=None,
              help="Height of the part surface in the robot base frame, mm (default: from the campaign plan).")
@click.option("--superpixel-size", type=click.IntRange(8, 256), default=32, show_default=True,
              help="Typical superpixel edge length, px.")
@click.option("--read-only", "read_only", is_flag=True,
              help="Open DATASET read-only: browse and review, edits refused (automatic when it is not writable).")
@click.option("--verbose", is_flag=True, help="Log every request.")
def command(dataset: Path, port: int, host: str, allow_remote: bool, no_browser: bool, model_dir: Optional[Path],
            calibration: Optional[Path], plane_z_mm: Optional[float], superpixel_size: int, read_only: bool,
            verbose: bool) -> None:
    """Label DATASET (a capture store): masks, part labels, carry-over, review. Ctrl+C stops."""
    check_bind_host(host, allow_remote, WHAT)
    warning = remote_bind_warning(host, allow_remote, WHAT)
    if warning:
        click.echo(warning, err=True)
    if not read_only and dataset.is_dir() and not store_is_writable(dataset):
        read_only = True
        click.echo(f"note: {dataset} is not writable: opened read-only (browse and review; edits are refused)",
                   err=True)
    app = build_app(dataset, model_dir, calibration, plane_z_mm, superpixel_size, read_only=read_only)
    try:
        server = LabellingHTTPServer(app, host, port, allow_remote=allow_remote, verbose=verbose)
    except BaseException:
        app.close()
        app.store.close()
        raise
    click.echo(f"labelling {dataset} at {server.url}  (port {server.server_address[1]}; Ctrl+C stops)")
    if not no_browser:
        try:
            opened = webbrowser.open(server.url)
        except webbrowser.Error:
            opened = False
        if not opened:
            click.echo(f"could not open a browser: go to {server.url}")
    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)  # stop cleanly on `kill` too
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        app.close()
        app.store.close()
