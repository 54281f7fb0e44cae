"""The capture store treats its own folder as untrusted data (issue 17, items 2, 3, 4 and 19).

- every path the manifest names (image, mask, type map) must resolve inside the store: ``..``, an absolute
  path or a symlink out is refused for every read, write and delete, and nothing outside is touched;
- a store whose manifest is missing, empty or foreign is an error, and no new manifest is ever created;
- a store opened read-only reads everything and writes nothing, also on a real read-only mount;
- the MVTec export follows the pairing rule of the leading MVTec AD reader (anomalib's ``MVTecAD``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from acquisition.errors import StoreError
from acquisition.store import CaptureStore
from tests.acquisition.test_store import JOINTS, POSE, H, W, _labelled_store, _two_type_labels, add, make_frame

REPO = Path(__file__).resolve().parents[2]


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks by their target text): what 'nothing changed' means."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _set_column(root: Path, sql: str, params: tuple) -> None:
    """Tamper with the manifest directly, as a hostile or damaged copy of a store would be."""
    conn = sqlite3.connect(root / "manifest.sqlite")
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.fixture()
def one_capture(tmp_path: Path):
    """A store with one capture of a defective part with a mask; returns (root, capture id, outside dir)."""
    root = tmp_path / "ds"
    mask = np.zeros((H, W), bool)
    mask[5:15, 5:25] = True
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
        rec = add(store, "d1", "a", seed=3, mask=mask, defect_type="scratch")
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, rec.id, outside


# --- item 2: paths from the manifest stay inside the store ---------------------------------------------
def _point_image_outside(root: Path, cid: int, outside: Path, how: str) -> Path:
    """Make capture ``cid``'s image a file outside the store, ``how``: relative ``..``, absolute, symlink."""
    secret = outside / "outside.png"
    shutil.copy(root / "images" / "c1" / "d1" / "a.png", secret)  # a valid PNG, so only the check can refuse it
    if how == "dotdot":
        _set_column(root, "UPDATE captures SET image_relpath = ? WHERE id = ?",
                    (os.path.relpath(secret, root), cid))
    elif how == "absolute":
        _set_column(root, "UPDATE captures SET image_relpath = ? WHERE id = ?", (str(secret), cid))
    else:
        image = root / "images" / "c1" / "d1" / "a.png"
        image.unlink()
        image.symlink_to(secret)
    return secret


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_an_image_path_leaving_the_store_is_never_read(one_capture, how, tmp_path: Path) -> None:
    root, cid, outside = one_capture
    _point_image_outside(root, cid, outside, how)
    before = _tree_digest(outside)
    with CaptureStore(root) as store:
        with pytest.raises(StoreError, match="leaves the store"):
            store.load_image(cid)
        with pytest.raises(StoreError, match="leaves the store"):
            store.image_path(cid)
        report = store.verify()
        assert not report.ok and any("leaves the store" in p for p in report.problems)
        store.set_part_label("g1", "good")
        add(store, "g1", "a", seed=9)
        with pytest.raises(StoreError, match="leaves the store"):
            store.export_mvtec(tmp_path / "mv", test_good_fraction=0.0)
    assert not (tmp_path / "mv").exists()
    assert _tree_digest(outside) == before


def test_a_mask_path_leaving_the_store_is_never_read_written_or_deleted(one_capture) -> None:
    root, cid, outside = one_capture
    victim = outside / "victim_mask.png"
    victim.write_bytes(b"precious")
    _set_column(root, "UPDATE masks SET relpath = ? WHERE capture_id = ?", (os.path.relpath(victim, root), cid))
    with CaptureStore(root) as store:
        with pytest.raises(StoreError, match="leaves the store"):
            store.get_mask(cid)
        with pytest.raises(StoreError, match="leaves the store"):
            store.mask_labels(cid)
        new = np.zeros((H, W), bool)
        new[0:3, 0:3] = True
        with pytest.raises(StoreError, match="leaves the store"):
            store.set_mask(cid, new, "scratch")  # would delete the "old revision" after the commit
        with pytest.raises(StoreError, match="leaves the store"):
            store.delete_mask(cid)
        with pytest.raises(StoreError, match="leaves the store"):
            store.set_part_label("d1", "good", clear_masks=True)
        assert store.mask_info(cid).relpath.endswith("victim_mask.png")  # nothing committed
        assert store.part_label("d1") == "defective"
    assert victim.read_bytes() == b"precious"


def test_a_type_map_path_leaving_the_store_is_refused(one_capture) -> None:
    root, cid, outside = one_capture
    victim = outside / "victim.types.png"
    victim.write_bytes(b"precious")
    _set_column(root, "UPDATE masks SET types_relpath = ?, types_json = ? WHERE capture_id = ?",
                (str(victim), '["a", "b"]', cid))
    with CaptureStore(root) as store:
        with pytest.raises(StoreError, match="leaves the store"):
            store.mask_labels(cid)
        with pytest.raises(StoreError, match="leaves the store"):
            store.set_mask(cid, np.zeros((H, W), bool), "scratch")
    assert victim.read_bytes() == b"precious"


def test_writes_never_follow_a_symlinked_folder_out_of_the_store(one_capture) -> None:
    root, cid, outside = one_capture
    (root / "images" / "c2").symlink_to(outside, target_is_directory=True)
    (root / "artifacts").symlink_to(outside, target_is_directory=True)
    with CaptureStore(root) as store:
        store.start_campaign("c2", {})
        with pytest.raises(StoreError, match="leaves the store"):
            store.add_capture("c2", "p1", "a", make_frame(1), POSE, POSE, JOINTS)
        assert not store.has_capture("c2", "p1", "a")
        with pytest.raises(StoreError, match="leaves the store"):
            store.write_artifact("artifacts/report.txt", b"x")
    assert list(outside.iterdir()) == []


def test_a_symlink_to_another_file_inside_the_store_is_fine(one_capture) -> None:
    root, cid, _ = one_capture
    image = root / "images" / "c1" / "d1" / "a.png"
    kept = root / "images" / "c1" / "d1" / "a-original.png"
    image.rename(kept)
    image.symlink_to(kept)
    with CaptureStore(root) as store:
        assert store.load_image(cid).shape == (H, W)


@pytest.mark.parametrize("relpath", ["", ".", "images/./x.png", "images//x.png", "images\\x.png", "C:/x.png",
                                     "images/\x00.png", "images/../../x.png"])
def test_malformed_manifest_paths_are_refused(tmp_path: Path, relpath: str) -> None:
    with CaptureStore(tmp_path / "ds", create=True) as store:
        with pytest.raises(StoreError, match="leaves the store|not a relative file path"):
            store.path_of(relpath, "test path")


# --- item 3: a missing or wiped manifest is an error, never replaced -----------------------------------
def _wipe(root: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        (root / f"manifest.sqlite{suffix}").unlink(missing_ok=True)
    if how == "empty":
        (root / "manifest.sqlite").write_bytes(b"")
    elif how == "missing":
        (root / "manifest.sqlite").unlink()
    else:  # another SQLite file: no store tables
        (root / "manifest.sqlite").unlink()
        conn = sqlite3.connect(root / "manifest.sqlite")
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        conn.close()


@pytest.mark.parametrize("how, message", [("empty", "empty \\(0 bytes\\)"), ("missing", "manifest is missing"),
                                          ("foreign", "not a capture store manifest")])
@pytest.mark.parametrize("mode", ["read_only", "writable", "create"])
def test_a_wiped_manifest_is_an_error_and_is_never_recreated(one_capture, how, message, mode) -> None:
    root, _, _ = one_capture
    _wipe(root, how)
    before = _tree_digest(root)
    kwargs = {"read_only": {"read_only": True}, "writable": {}, "create": {"create": True}}[mode]
    with pytest.raises(StoreError, match=message):
        CaptureStore(root, **kwargs)
    assert _tree_digest(root) == before  # no new manifest, no -wal/-shm, nothing rewritten


# --- item 4: read-only opening -------------------------------------------------------------------------
def test_a_store_opened_read_only_reads_everything_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with _labelled_store(root) as store:
        d3 = add(store, "d3", "a", seed=105)
        store.set_mask_labels(d3.id, _two_type_labels(), ["scratch", "crack"])
    before = _tree_digest(root)
    with CaptureStore(root, read_only=True) as store:
        assert store.read_only
        captures = store.captures()
        assert len(captures) == 16 and store.verify().ok
        assert store.load_image(captures[0]).shape == (H, W)
        labels, types, revision = store.mask_labels(d3.id)
        assert types == ["scratch", "crack"] and revision == 1 and labels.max() == 2
        report = store.export_mvtec(tmp_path / "mv", test_good_fraction=0.4)
        assert report.counts["test/combined"] == 1
        for attempt in (lambda: store.set_part_label("g0", "defective"),
                        lambda: store.set_mask(captures[0].id, np.zeros((H, W), bool), "good"),
                        lambda: store.start_campaign("c9", {}),
                        lambda: store.set_setting("k", 1),
                        lambda: store.write_artifact("reports/x.txt", b"x"),
                        lambda: store.finish_campaign("c1", "completed", {})):
            with pytest.raises(StoreError, match="open read-only"):
                attempt()
        # the connection itself refuses to write (SQLite mode=ro), not only the store's methods
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            store._db.execute("UPDATE parts SET label = 'good'")
    assert {k: v for k, v in _tree_digest(root).items() if not k.startswith("manifest.sqlite-")} == \
        {k: v for k, v in before.items() if not k.startswith("manifest.sqlite-")}
    assert not (root / "manifest.sqlite-wal").exists() or (root / "manifest.sqlite-wal").stat().st_size == 0


def test_read_only_and_create_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="read-only cannot be created"):
        CaptureStore(tmp_path / "new", create=True, read_only=True)
    assert not (tmp_path / "new").exists()


def test_a_format_1_store_opened_read_only_asks_for_an_upgrade(tmp_path: Path) -> None:
    from tests.acquisition.test_store import _downgrade_to_format_1

    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
        add(store, "p1", "a")
    _downgrade_to_format_1(root)
    with pytest.raises(StoreError, match="must be upgraded"):
        CaptureStore(root, read_only=True)


def read_only_mount_runner(root: Path):
    """A way to run a command while ``root`` is really read-only, as the test user: a read-only bind mount
    in a private mount namespace (root), or ``chmod -R a-w`` (any other user, for whom modes are enforced).
    Returns ``run(argv) -> CompletedProcess``, or a skip reason string."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if os.geteuid() != 0:
        def run_chmod(argv):
            subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
            finally:
                subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)
        return run_chmod
    unshare = shutil.which("unshare")
    if unshare is None:
        return "running as root without `unshare`: no way to make the store read-only for root here"
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount --bind '{root}' '{root}' && "
                            f"mount -o remount,bind,ro '{root}' && ! touch '{root}/.probe' 2>/dev/null"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"running as root and `unshare -m` cannot make a read-only bind mount here: {probe.stderr.strip()}"

    def run_mounted(argv):
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
        script = f"mount --bind '{root}' '{root}' && mount -o remount,bind,ro '{root}' && exec {quoted}"
        return subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                              env=env)
    return run_mounted


def test_a_store_on_a_read_only_mount_can_be_read(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with _labelled_store(root):
        pass  # closed cleanly: no -wal/-shm left, as on a copied share
    runner = read_only_mount_runner(root)
    if isinstance(runner, str):
        pytest.skip(runner)
    code = textwrap.dedent(f"""
        from acquisition.store import CaptureStore
        with CaptureStore({str(root)!r}, read_only=True) as store:
            caps = store.captures()
            print(len(caps), store.verify().ok, store.load_image(caps[0]).shape, store.get_mask(caps[-3].id)[2])
            report = store.export_mvtec({str(tmp_path / 'mv')!r})
            print(sorted(report.counts.items()))
    """)
    result = runner([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"15 True {(H, W)} 1"
    assert "('test/nut', 1)" in lines[1] and (tmp_path / "mv" / "export.json").is_file()
    assert not (root / "manifest.sqlite-wal").exists() and not (root / "manifest.sqlite-shm").exists()


# --- item 19: the export as the leading MVTec AD reader reads it ---------------------------------------
#: anomalib's IMG_EXTENSIONS (anomalib.data.utils.path, 2.x): the suffixes its MVTec reader takes as images.
ANOMALIB_IMG_EXTENSIONS = (".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".pbm", ".pgm",
                           ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic")


def anomalib_mvtec_samples(category: Path) -> list[dict]:
    """Re-implementation of the reading rule of anomalib 2.7's ``make_mvtec_ad_dataset`` (``MVTecAD``).

    It takes EVERY file under the category folder whose suffix is an image extension, as
    ``(split, label, name)`` = its last three path parts; ``split == "ground_truth"`` rows are the masks;
    the other rows, sorted by path, are the samples; the masks, sorted by path, are assigned in order to the
    test samples whose label is not ``good`` (a count mismatch fails there), and each image's stem must be
    contained in its mask's stem. A sample whose split is neither train nor test is unusable for it (its
    later image/mask checks fail on it). Returns the samples as dicts (split, label, image, mask).
    """
    rows = [(p.parts[-3], p.parts[-2], p) for p in category.glob("**/*") if p.suffix in ANOMALIB_IMG_EXTENSIONS]
    assert rows, f"Found 0 images in {category}"
    masks = sorted((r for r in rows if r[0] == "ground_truth"), key=lambda r: str(r[2]))
    samples = sorted((r for r in rows if r[0] != "ground_truth"), key=lambda r: str(r[2]))
    bad_split = [str(r[2].relative_to(category)) for r in samples if r[0] not in ("train", "test")]
    assert not bad_split, f"images outside train/ and test/ (taken as samples with a bogus split): {bad_split}"
    abnormal = [r for r in samples if r[0] == "test" and r[1] != "good"]
    assert len(abnormal) == len(masks), f"{len(abnormal)} anomalous test images but {len(masks)} masks"
    out = [{"split": split, "label": label, "image": path, "mask": None} for split, label, path in samples]
    for sample, mask in zip((s for s in out if s["split"] == "test" and s["label"] != "good"), masks):
        assert sample["image"].stem in mask[2].stem, f"image {sample['image'].name} paired with mask {mask[2].name}"
        sample["mask"] = mask[2]
    assert all(s["label"] == "good" for s in out if s["split"] == "train")
    return out


def test_the_export_loads_with_the_mvtec_reader_rule_of_anomalib(tmp_path: Path) -> None:
    import cv2

    with _labelled_store(tmp_path / "ds") as store:
        d3 = add(store, "d3", "a", seed=105)
        store.set_mask_labels(d3.id, _two_type_labels(), ["scratch", "crack"])  # a "combined" image
        report = store.export_mvtec(tmp_path / "out" / "sheet", test_good_fraction=0.4, seed=3)
    samples = anomalib_mvtec_samples(tmp_path / "out" / "sheet")
    train = [s for s in samples if s["split"] == "train"]
    test = [s for s in samples if s["split"] == "test"]
    assert len(train) == report.counts["train/good"] and len(test) == sum(
        n for k, n in report.counts.items() if k.startswith("test/"))
    labels = {s["label"] for s in test}
    assert {"nut", "fold", "combined", "good"} <= labels
    for sample in test:
        if sample["label"] != "good":
            mask = cv2.imread(str(sample["mask"]), cv2.IMREAD_UNCHANGED)
            image = cv2.imread(str(sample["image"]), cv2.IMREAD_UNCHANGED)
            assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    # the region types are still exported, in a file no image reader takes
    assert (tmp_path / "out" / "sheet" / "region_types.npz").is_file()
    assert not any(p.suffix in ANOMALIB_IMG_EXTENSIONS for p in (tmp_path / "out" / "sheet").iterdir())


def test_the_reader_rule_rejects_an_extra_image_folder_in_the_category(tmp_path: Path) -> None:
    """The rule above is strict enough to catch what broke anomalib: an image folder beside train/ and test/."""
    with _labelled_store(tmp_path / "ds") as store:
        store.export_mvtec(tmp_path / "out" / "sheet", test_good_fraction=0.4, seed=3)
    extra = tmp_path / "out" / "sheet" / "region_types"
    extra.mkdir()
    shutil.copy(next((tmp_path / "out" / "sheet" / "train" / "good").iterdir()), extra / "x_types.png")
    with pytest.raises(AssertionError, match="outside train/ and test/"):
        anomalib_mvtec_samples(tmp_path / "out" / "sheet")


def test_a_pending_write_ahead_log_on_a_read_only_mount_is_named(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
    # a writer killed after a commit: its changes sit in manifest.sqlite-wal, not yet in the main file
    killed = textwrap.dedent(f"""
        import os
        from acquisition.store import CaptureStore
        store = CaptureStore({str(root)!r})
        store.set_setting("k", 1)
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", killed], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert (root / "manifest.sqlite-wal").stat().st_size > 0
    (root / "manifest.sqlite-shm").unlink()
    runner = read_only_mount_runner(root)
    if isinstance(runner, str):
        pytest.skip(runner)
    code = f"from acquisition.store import CaptureStore\nCaptureStore({str(root)!r}, read_only=True)"
    result = runner([sys.executable, "-c", code])
    assert result.returncode != 0 and "write-ahead log (manifest.sqlite-wal) holds changes" in result.stderr
    with CaptureStore(root, read_only=True) as store:  # where the folder is writable, the log is read
        assert store.get_setting("k") == 1


@pytest.mark.parametrize("sql", [
    "UPDATE captures SET commanded_pose = 'not json'",
    "UPDATE captures SET width = 'wide'",
    "UPDATE masks SET types_json = '{broken'",
    "UPDATE masks SET revision = 'r2'",
    "UPDATE campaigns SET config_json = '['",
])
def test_a_malformed_manifest_row_is_a_store_error_naming_the_row(one_capture, sql) -> None:
    root, _, _ = one_capture
    _set_column(root, sql, ())
    with CaptureStore(root, read_only=True) as store:
        with pytest.raises(StoreError, match="manifest row of .* is damaged"):
            store.captures()
            store.mask_infos()
            store.campaigns()
