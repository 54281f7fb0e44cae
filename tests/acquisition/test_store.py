"""The capture store: crash-safe writes, labels, masks with revisions, verification, MVTec export."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from acquisition.camera import Frame
from acquisition.errors import StoreError
from acquisition.store import FORMAT_VERSION, CaptureStore, _files

H, W = 48, 64


def make_frame(seed: int = 0, *, fmt: str = "Mono8", shape=(H, W), dtype=np.uint8, extra=None) -> Frame:
    rng = np.random.default_rng(seed)
    high = 65535 if dtype == np.uint16 else 255
    full_shape = shape + (3,) if fmt == "RGB8" else shape
    pixels = rng.integers(0, high + 1, size=full_shape, dtype=dtype)
    return Frame(pixels=pixels, frame_id=seed, host_timestamp_s=1000.0 + seed, device_timestamp_ns=seed * 10,
                 exposure_us=5000.0, gain_db=1.5, pixel_format=fmt, camera_id="cam-1", extra=dict(extra or {}))


POSE = [0.4, 0.1, 0.35, 3.14159, 0.0, 0.0]
JOINTS = [0.0, -1.5, 1.5, -1.57, -1.57, 0.0]


def add(store: CaptureStore, part: str, pose: str, seed: int = 0, campaign: str = "c1", **kw):
    return store.add_capture(campaign, part, pose, make_frame(seed), POSE, POSE, JOINTS, {"k": 1}, **kw)


@pytest.fixture()
def store(tmp_path: Path):
    with CaptureStore(tmp_path / "ds", create=True) as s:
        s.start_campaign("c1", {"plan": {"rows": 2}})
        yield s


def test_create_layout_and_reopen(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as s:
        s.start_campaign("c1", {})
        add(s, "p1", "a")
    meta = json.loads((root / "store.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and "types_json" in meta["schema"]["masks"]
    with CaptureStore(root) as s:  # reopen without create
        assert s.has_capture("c1", "p1", "a")
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (root / "images" / "c1" / "p1" / "a.png").is_file()


def test_open_rejects_non_store_and_unknown_version(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such capture store"):
        CaptureStore(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match=f"{other}: not a capture store"):
        CaptureStore(other)
    with pytest.raises(StoreError, match="not empty and not a capture store"):
        CaptureStore(other, create=True)
    root = tmp_path / "ds"
    CaptureStore(root, create=True).close()
    meta = json.loads((root / "store.json").read_text())
    meta["format_version"] = 99
    (root / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"ds: store format version 99 is not supported"):
        CaptureStore(root)


@pytest.mark.parametrize("fmt,dtype", [("Mono8", np.uint8), ("RGB8", np.uint8), ("Mono16", np.uint16)])
def test_capture_roundtrip_is_lossless_with_metadata(store: CaptureStore, fmt: str, dtype) -> None:
    frame = make_frame(3, fmt=fmt, dtype=dtype, extra={"sim_part_id": "x", "sim_mask": np.zeros((H, W), bool),
                                                       "object": object()})
    rec = store.add_capture("c1", "p1", "a", frame, POSE, [0.41, 0.1, 0.35, 3.1, 0, 0], JOINTS, {"shot": 2})
    assert np.array_equal(store.load_image(rec), frame.pixels)
    assert store.load_image(rec).dtype == dtype
    again = store.get_capture(rec.id)
    assert again == rec
    assert rec.actual_pose == (0.41, 0.1, 0.35, 3.1, 0.0, 0.0) and rec.joints == tuple(JOINTS)
    assert (rec.width, rec.height, rec.pixel_format) == (W, H, fmt)
    assert rec.extra == {"sim_part_id": "x", "shot": 2}  # arrays / objects are not copied into the row
    assert rec.device_timestamp_ns == 30 and rec.exposure_us == 5000.0 and rec.camera_id == "cam-1"
    assert _files.sha256_file(store.image_path(rec)) == rec.sha256
    assert store.part_label("p1") == "unlabelled"


def test_unique_key_and_bad_names(store: CaptureStore) -> None:
    add(store, "p1", "a")
    with pytest.raises(StoreError, match="already exists"):
        add(store, "p1", "a", seed=5)
    assert np.array_equal(store.load_image(store.captures()[0]), make_frame(0).pixels)  # not overwritten
    with pytest.raises(StoreError, match="invalid part id '../evil'"):
        add(store, "../evil", "a")
    with pytest.raises(StoreError, match="unknown campaign 'nope'"):
        add(store, "p1", "b", campaign="nope")
    with pytest.raises(StoreError, match="commanded_pose must be 6 finite numbers"):
        store.add_capture("c1", "p1", "c", make_frame(), [0, 0, 0], POSE, JOINTS)
    assert len(store.captures()) == 1


def test_campaign_resume_requires_same_config(store: CaptureStore) -> None:
    with pytest.raises(StoreError, match="already exists"):
        store.start_campaign("c1", {"plan": {"rows": 2}})
    with pytest.raises(StoreError, match="different configuration"):
        store.start_campaign("c1", {"plan": {"rows": 3}}, resume=True)
    status = store.start_campaign("c1", {"plan": {"rows": 2}}, resume=True)
    assert status.status == "running" and status.config == {"plan": {"rows": 2}}
    add(store, "p1", "a")
    path = store.finish_campaign("c1", "completed", {"captures": 1})
    assert json.loads(path.read_text()) == {"captures": 1}
    st = store.campaign_status("c1")
    assert (st.status, st.n_captures, st.n_parts, st.summary) == ("completed", 1, 1, {"captures": 1})


def test_disk_full_leaves_store_consistent_and_names_file(store: CaptureStore, monkeypatch) -> None:
    add(store, "p1", "a")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full_disk)
    target = store.root / "images" / "c1" / "p1" / "b.png"
    with pytest.raises(StoreError) as info:
        add(store, "p1", "b", seed=1)
    assert str(info.value) == f"cannot write {target}: no space left on device"
    assert not store.has_capture("c1", "p1", "b")
    assert not target.exists()
    assert not [p for p in store.root.rglob("*") if p.name.startswith(_files.TMP_PREFIX)]
    monkeypatch.undo()
    report = store.verify()
    assert report.ok and report.n_captures == 1 and report.orphans == []
    add(store, "p1", "b", seed=1)  # the same capture succeeds once there is space again
    assert store.verify().ok


def test_unwritable_folder_raises_store_error(store: CaptureStore, monkeypatch) -> None:
    real_open = open

    def deny(path, *args, **kwargs):
        if _files.TMP_PREFIX in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(StoreError, match=r"cannot write .*images/c1/p1/a\.png: Permission denied"):
        add(store, "p1", "a")
    monkeypatch.undo()
    assert store.captures() == [] and store.verify().ok


def test_masks_exact_with_revisions(store: CaptureStore) -> None:
    rec = add(store, "p1", "a")
    assert store.get_mask(rec.id) == (None, None, 0)
    mask = np.zeros((H, W), bool)
    mask[5:9, 10:30] = True
    mask[20, 7] = True  # single pixel survives exactly
    r1 = store.set_mask(rec.id, mask, "nut", "human", revision=0)
    got, kind, rev = store.get_mask(rec.id)
    assert (r1, kind, rev) == (1, "nut", 1) and np.array_equal(got, mask)
    stored = cv2.imread(str(store.root / store.mask_info(rec.id).relpath), cv2.IMREAD_UNCHANGED)
    assert stored.ndim == 2 and set(np.unique(stored)) == {0, 255}
    assert store.part_label("p1") == "defective"  # a non-empty mask on an unlabelled part
    # a second tab based on revision 0 must not overwrite revision 1
    with pytest.raises(StoreError, match="mask of capture 1 changed since revision 0 \\(now revision 1\\)"):
        store.set_mask(rec.id, np.zeros((H, W), bool), "nut", "human", revision=0)
    assert np.array_equal(store.get_mask(rec.id)[0], mask)
    assert store.set_mask(rec.id, ~mask, "fold", "human", revision=1) == 2
    assert store.set_mask(rec.id, mask, "fold", "human") == 3  # no revision: last write wins
    files = sorted(p.name for p in (store.root / "masks" / "c1" / "p1").iterdir())
    assert files == ["a.r3.png"]  # older revisions are removed
    with pytest.raises(StoreError, match="has shape"):
        store.set_mask(rec.id, np.zeros((H + 1, W), bool), "nut", "human")
    with pytest.raises(StoreError, match="invalid mask source"):
        store.set_mask(rec.id, mask, "nut", "robot")
    assert store.verify().ok


def test_a_bool_mask_viewed_from_a_0_255_image_is_stored_as_one_type(store: CaptureStore) -> None:
    image = np.zeros((H, W), np.uint8)
    image[3:7, 4:12] = 255
    mask = image.view(bool)  # True bytes are 255: the store must still see a one-type 0/1 label map
    rec = add(store, "p1", "a", mask=mask, defect_type="nut", mask_source="sim")
    labels, types, _ = store.mask_labels(rec.id)
    assert types == ["nut"] and set(np.unique(labels)) == {0, 1}
    assert store.mask_info(rec.id).area_px == 32
    assert store.set_mask(rec.id, mask, "nut", "human") == 2
    assert np.array_equal(store.get_mask(rec.id)[0], image > 0)


def test_mask_revision_conflict_between_two_store_handles(tmp_path: Path) -> None:
    with CaptureStore(tmp_path / "ds", create=True) as a:
        a.start_campaign("c1", {})
        rec = add(a, "p1", "a")
        with CaptureStore(tmp_path / "ds") as b:
            _, _, rev_a = a.get_mask(rec.id)
            _, _, rev_b = b.get_mask(rec.id)
            m = np.zeros((H, W), bool)
            m[1, 1] = True
            a.set_mask(rec.id, m, "nut", revision=rev_a)
            with pytest.raises(StoreError, match="changed since revision 0"):
                b.set_mask(rec.id, ~m, "nut", revision=rev_b)
            assert np.array_equal(b.get_mask(rec.id)[0], m)


def _two_type_labels() -> np.ndarray:
    """A (H, W) uint8 label map: region 1 (rows 5-8, cols 10-29) and region 2 (rows 30-39, cols 40-49 plus
    one pixel), 0 elsewhere."""
    labels = np.zeros((H, W), np.uint8)
    labels[5:9, 10:30] = 1
    labels[30:40, 40:50] = 2
    labels[0, 63] = 2
    return labels


def test_mask_types_per_region_roundtrip_with_revisions(store: CaptureStore) -> None:
    rec = add(store, "p1", "a")
    assert store.mask_labels(rec.id) == (None, [], 0)
    labels = _two_type_labels()
    assert store.set_mask_labels(rec.id, labels, ["scratch", "crack"], revision=0) == 1
    got, types, rev = store.mask_labels(rec.id)
    assert got.dtype == np.uint8 and np.array_equal(got, labels) and types == ["scratch", "crack"] and rev == 1
    # the binary mask is exactly the label map > 0, stored 0/255; the row's type is "combined"
    mask, kind, _ = store.get_mask(rec.id)
    assert kind == "combined" and np.array_equal(mask, labels > 0)
    info = store.mask_info(rec.id)
    assert info.types == ("scratch", "crack") and info.area_px == int((labels > 0).sum())
    png = cv2.imread(str(store.root / info.relpath), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(png)) == {0, 255} and np.array_equal(png == 255, labels > 0)
    assert info.types_relpath == "masks/c1/p1/a.r1.types.png"
    assert np.array_equal(cv2.imread(str(store.root / info.types_relpath), cv2.IMREAD_UNCHANGED), labels)
    assert store.defect_types() == ["crack", "scratch"]  # the region types, not "combined"
    # a stale revision is refused and changes nothing
    with pytest.raises(StoreError, match="changed since revision 0 \\(now revision 1\\)"):
        store.set_mask_labels(rec.id, labels * 0, [], revision=0)
    assert np.array_equal(store.mask_labels(rec.id)[0], labels)
    # unused types are dropped and the map renumbered: only "crack" is left -> one type, no label map file
    only_crack = np.where(labels == 2, 3, 0).astype(np.uint8)
    assert store.set_mask_labels(rec.id, only_crack, ["scratch", "fold", "crack"], revision=1) == 2
    got, types, rev = store.mask_labels(rec.id)
    assert types == ["crack"] and rev == 2 and np.array_equal(got, (labels == 2).astype(np.uint8))
    assert store.get_mask(rec.id)[1] == "crack" and store.mask_info(rec.id).types_relpath is None
    assert sorted(p.name for p in (store.root / "masks" / "c1" / "p1").iterdir()) == ["a.r2.png"]  # old files gone
    # back to two types (revision 3), then an empty mask (revision 4): no types, the given empty type
    store.set_mask_labels(rec.id, labels, ["hole", "crack"], revision=2)
    assert store.mask_labels(rec.id)[1:] == (["hole", "crack"], 3)
    assert store.set_mask_labels(rec.id, np.zeros((H, W), np.uint8), ["hole"], revision=3) == 4
    assert store.mask_labels(rec.id)[1:] == ([], 4) and store.get_mask(rec.id)[1] == "good"
    assert store.verify().ok and not store.verify().orphans


@pytest.mark.parametrize("labels, types, message", [
    (np.full((H, W), 3, np.uint8), ["a", "b"], "values must lie in 0..2"),
    (np.ones((H, W), np.uint8), ["a", "a"], "contain a duplicate"),
    (np.ones((H, W), bool), ["a"], "must hold integers"),
    (np.ones((H, W), np.uint8), ["../x"], "invalid defect type"),
    (np.ones((H + 1, W), np.uint8), ["a"], "has shape"),
])
def test_bad_type_label_maps_are_refused(store: CaptureStore, labels, types, message) -> None:
    rec = add(store, "p1", "a")
    with pytest.raises(StoreError, match=message):
        store.set_mask_labels(rec.id, labels, types)
    assert store.mask_info(rec.id) is None


def test_add_capture_with_a_type_label_map_and_verify_of_its_file(store: CaptureStore) -> None:
    labels = _two_type_labels()
    rec = add(store, "p1", "a", mask=labels, mask_types=["nut", "fold"], mask_source="sim")
    got, types, rev = store.mask_labels(rec.id)
    assert np.array_equal(got, labels) and types == ["nut", "fold"] and rev == 1
    assert store.get_mask(rec.id)[1] == "combined" and store.part_label("p1") == "defective"
    path = store.root / store.mask_info(rec.id).types_relpath
    tampered = labels.copy()
    tampered[5, 10] = 2  # a region re-typed behind the store's back
    path.write_bytes(_files.encode_labels(tampered))
    assert store.verify().problems == ["masks/c1/p1/a.r1.types.png: sha256 mismatch"]
    tampered[0, 0] = 1  # a label outside the binary mask
    path.write_bytes(_files.encode_labels(tampered))
    with pytest.raises(StoreError, match="does not match its mask"):
        store.mask_labels(rec.id)
    with pytest.raises(StoreError, match="without a mask"):
        add(store, "p1", "b", mask_types=["nut"])

def test_mask_infos_reads_every_mask_in_one_query_as_mask_info_does(store: CaptureStore) -> None:
    assert store.mask_infos() == {}
    one = np.zeros((H, W), bool)
    one[2:6, 3:9] = True
    typed = add(store, "p1", "a", mask=_two_type_labels(), mask_types=["nut", "fold"])
    single = add(store, "p1", "b", seed=1, mask=one, defect_type="nut")
    bare = add(store, "p1", "c", seed=2)
    empty = add(store, "p2", "a", seed=3, mask=np.zeros((H, W), bool), defect_type="good")
    store.set_mask(single.id, ~one, "fold", "human", revision=1)  # a second revision
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        infos = store.mask_infos()
    finally:
        store._conn.set_trace_callback(None)
    assert len(statements) == 1
    assert list(infos) == [typed.id, single.id, empty.id]  # by capture id; no entry without a mask
    assert all(infos[cid] == store.mask_info(cid) for cid in infos) and store.mask_info(bare.id) is None
    assert infos[single.id].revision == 2 and infos[empty.id].area_px == 0 and infos[typed.id].types == ("nut", "fold")



def _downgrade_to_format_1(root: Path) -> None:
    """Turn a store whose masks have one type each into exactly what format version 1 wrote: the masks
    table without the per-region type columns, and a version 1 marker."""
    import sqlite3

    from acquisition.store._schema import MASKS_V2_COLUMNS, SCHEMA_SUMMARY

    conn = sqlite3.connect(root / "manifest.sqlite")
    for name, _ in MASKS_V2_COLUMNS:
        conn.execute(f"ALTER TABLE masks DROP COLUMN {name}")
    conn.commit()
    conn.close()
    meta = json.loads((root / "store.json").read_text())
    schema = dict(SCHEMA_SUMMARY, masks=[c for c in SCHEMA_SUMMARY["masks"] if not c.startswith("types_")])
    meta.update(format_version=1, schema=schema)
    (root / "store.json").write_text(json.dumps(meta))


def test_format_1_store_is_upgraded_and_its_masks_read_as_one_type(tmp_path: Path) -> None:
    root = tmp_path / "old"
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:20] = True
    with CaptureStore(root, create=True) as s:
        s.start_campaign("c1", {})
        old = add(s, "p1", "a", mask=mask, defect_type="nut")
        empty = add(s, "p1", "b", seed=1, mask=np.zeros((H, W), bool), defect_type="good")
    _downgrade_to_format_1(root)
    import sqlite3

    conn = sqlite3.connect(root / "manifest.sqlite")
    assert "types_json" not in {r[1] for r in conn.execute("PRAGMA table_info(masks)")}
    conn.close()
    with CaptureStore(root) as s:  # opens, and upgrades the manifest and the marker in place
        meta = json.loads((root / "store.json").read_text())
        assert meta["format_version"] == FORMAT_VERSION and "types_json" in meta["schema"]["masks"]
        got, types, rev = s.mask_labels(old.id)
        assert types == ["nut"] and rev == 1 and got.dtype == np.uint8 and np.array_equal(got, mask.astype(np.uint8))
        assert s.get_mask(old.id)[1] == "nut" and s.mask_info(old.id).types == ("nut",)
        assert s.mask_infos()[old.id].types == ("nut",) and s.mask_infos()[empty.id].types == ()
        assert s.mask_labels(empty.id)[1:] == ([], 1) and s.defect_types() == ["nut"]
        # the old mask is edited into two types with the usual revision check
        labels = mask.astype(np.uint8)
        labels[10:15, 10:20] = 2
        assert s.set_mask_labels(old.id, labels, ["nut", "stain"], revision=1) == 2
        assert s.get_mask(old.id)[1] == "combined" and s.verify().ok
    with CaptureStore(root) as s:  # opening again does not upgrade twice
        assert s.mask_labels(old.id)[1] == ["nut", "stain"]
        assert json.loads((root / "store.json").read_text())["format_version"] == FORMAT_VERSION


def test_part_labels_good_has_no_masks(store: CaptureStore) -> None:
    rec_a = add(store, "p1", "a")
    add(store, "p1", "b", seed=1)
    store.set_part_label("p1", "defective")
    info = store.part("p1")
    assert (info.label, info.labelled, info.n_captures, info.n_masked_poses) == ("defective", False, 2, 0)
    mask = np.zeros((H, W), bool)
    mask[3:6, 3:6] = True
    store.set_mask(rec_a.id, mask, "stain")
    assert store.part("p1").labelled and store.part("p1").n_masked_poses == 1
    with pytest.raises(StoreError, match="has 1 masked pose"):
        store.set_part_label("p1", "good")
    assert store.part_label("p1") == "defective"
    store.set_part_label("p1", "good", clear_masks=True)
    assert store.part_label("p1") == "good" and store.get_mask(rec_a.id) == (None, None, 0)
    assert store.verify().ok and store.verify().orphans == []
    with pytest.raises(StoreError, match="is marked good"):
        store.set_mask(rec_a.id, mask, "stain")
    store.set_mask(rec_a.id, np.zeros((H, W), bool), "good")  # an empty mask is fine on a good part
    with pytest.raises(StoreError, match="invalid part label"):
        store.set_part_label("p1", "ok")


def test_verify_finds_missing_and_tampered_files(store: CaptureStore) -> None:
    r1 = add(store, "p1", "a")
    r2 = add(store, "p1", "b", seed=1)
    (store.root / "images" / "c1" / "p9").mkdir(parents=True)
    (store.root / "images" / "c1" / "p9" / "x.png").write_bytes(b"orphan")
    assert store.verify().ok and store.verify().orphans == ["images/c1/p9/x.png"]
    store.image_path(r1).unlink()
    data = bytearray(store.image_path(r2).read_bytes())
    data[-20] ^= 0xFF
    store.image_path(r2).write_bytes(bytes(data))
    report = store.verify()
    assert not report.ok
    assert report.problems == ["images/c1/p1/a.png: missing", "images/c1/p1/b.png: sha256 mismatch"]


def test_inspections_roundtrip(store: CaptureStore) -> None:
    add(store, "p1", "a")
    iid = store.add_inspection("p1", "NOK", "score above threshold", {"a": 0.9}, "a", "models/x")
    (rec,) = store.inspections("p1")
    assert (rec.id, rec.verdict, rec.scores, rec.worst_pose, rec.model_dir) == (iid, "NOK", {"a": 0.9}, "a", "models/x")
    with pytest.raises(StoreError, match="invalid verdict"):
        store.add_inspection("p1", "maybe")


def test_settings_roundtrip_across_handles(store: CaptureStore) -> None:
    assert store.get_setting("defect_types", []) == []
    store.set_setting("defect_types", ["nut", "fold"])
    with CaptureStore(store.root) as other:
        assert other.get_setting("defect_types") == ["nut", "fold"]
    with pytest.raises(StoreError, match="setting 'bad' is not JSON serialisable"):
        store.set_setting("bad", object())


def test_write_artifact_inside_allowed_folders_only(store: CaptureStore) -> None:
    rel = store.write_artifact("inspections/c1/p1/a_heatmap.png", b"png-bytes")
    assert rel == "inspections/c1/p1/a_heatmap.png" and (store.root / rel).read_bytes() == b"png-bytes"
    store.write_artifact(rel, b"v2")  # replaced atomically
    assert (store.root / rel).read_bytes() == b"v2"
    for bad in ("images/c1/p1/a.png", "inspections/../manifest.sqlite", "manifest.sqlite", "/etc/x"):
        with pytest.raises(StoreError):
            store.write_artifact(bad, b"x")
    assert store.verify().ok


def _labelled_store(root: Path) -> CaptureStore:
    store = CaptureStore(root, create=True)
    store.start_campaign("c1", {})
    for i in range(5):
        store.set_part_label(f"g{i}", "good", source="sim")
        for pose in ("a", "b"):
            add(store, f"g{i}", pose, seed=i * 10 + ord(pose), mask=np.zeros((H, W), bool), defect_type="good")
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:20] = True
    add(store, "d1", "a", seed=100, mask=mask, defect_type="nut")
    add(store, "d1", "b", seed=101, mask=np.zeros((H, W), bool), defect_type="good")  # defect out of view
    add(store, "d2", "a", seed=102, mask=mask, defect_type="fold")
    add(store, "d2", "b", seed=103)  # no mask stored: skipped
    add(store, "u1", "a", seed=104)  # unlabelled: skipped
    return store


def test_export_mvtec_layout(tmp_path: Path) -> None:
    with _labelled_store(tmp_path / "ds") as store:
        report = store.export_mvtec(tmp_path / "mv", test_good_fraction=0.4, seed=3)
        out = tmp_path / "mv"
        assert sorted(p.name for p in out.iterdir()) == ["export.json", "ground_truth", "test", "train"]
        assert sorted(p.name for p in (out / "test").iterdir()) == ["fold", "good", "nut"]
        assert report.counts == {"train/good": 6, "test/good": 5, "test/nut": 1, "test/fold": 1}
        assert report.skipped == {"defective_pose_without_mask": 1, "unlabelled": 1}
        assert (out / "test" / "nut" / "c1_d1_a.png").is_file()
        gt = cv2.imread(str(out / "ground_truth" / "nut" / "c1_d1_a_mask.png"), cv2.IMREAD_UNCHANGED)
        assert gt.dtype == np.uint8 and gt.shape == (H, W) and set(np.unique(gt)) == {0, 255}
        assert gt[15, 15] == 255 and gt[0, 0] == 0 and int((gt == 255).sum()) == 100
        assert (out / "test" / "good" / "c1_d1_b.png").is_file()  # empty mask: the defect is out of view
        assert not (out / "ground_truth" / "good").exists()
        train_parts = {p.name.split("_")[1] for p in (out / "train" / "good").iterdir()}
        test_good_parts = {p.name.split("_")[1] for p in (out / "test" / "good").iterdir()} - {"d1"}
        assert len(test_good_parts) == 2 and not train_parts & test_good_parts  # split by part
        img = cv2.imread(str(out / "train" / "good" / sorted(os.listdir(out / "train" / "good"))[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (H, W)
        meta = json.loads((out / "export.json").read_text())
        assert meta["split"] == {"test_good_fraction": 0.4, "seed": 3} and len(meta["files"]) == 13
        # deterministic with the seed
        store.export_mvtec(tmp_path / "mv2", test_good_fraction=0.4, seed=3)
        assert sorted(os.listdir(tmp_path / "mv2" / "train" / "good")) == sorted(os.listdir(out / "train" / "good"))
        with pytest.raises(StoreError, match="already exists"):
            store.export_mvtec(out)
        store.export_mvtec(out, test_good_fraction=0.0, overwrite=True)
        assert len(os.listdir(out / "train" / "good")) == 10
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_export_mvtec_puts_an_image_with_several_region_types_in_combined(tmp_path: Path) -> None:
    labels = _two_type_labels()
    with _labelled_store(tmp_path / "ds") as store:
        d3 = add(store, "d3", "a", seed=105)
        store.set_mask_labels(d3.id, labels, ["scratch", "crack"])
        d4 = add(store, "d4", "a", seed=106)  # painted with two types, then one of them erased: one type left
        store.set_mask_labels(d4.id, (labels == 2).astype(np.uint8) * 2, ["scratch", "crack"])
        report = store.export_mvtec(tmp_path / "mv", test_good_fraction=0.4, seed=3)
    out = tmp_path / "mv"
    assert report.counts["test/combined"] == 1 and report.counts["test/crack"] == 1
    assert (out / "test" / "combined" / "c1_d3_a.png").is_file() and (out / "test" / "crack" / "c1_d4_a.png").is_file()
    gt = cv2.imread(str(out / "ground_truth" / "combined" / "c1_d3_a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255} and np.array_equal(gt == 255, labels > 0)
    with np.load(out / "region_types.npz", allow_pickle=False) as maps:
        assert list(maps.keys()) == ["c1_d3_a"]
        types_map = maps["c1_d3_a"]
    assert types_map.dtype == np.uint8 and np.array_equal(types_map, labels)
    entries = {e["file"]: e for e in json.loads((out / "export.json").read_text())["files"]}
    assert entries["test/combined/c1_d3_a.png"]["types"] == ["scratch", "crack"]
    assert entries["test/combined/c1_d3_a.png"]["types_map"] == {"file": "region_types.npz", "key": "c1_d3_a"}
    assert entries["test/crack/c1_d4_a.png"]["types"] == ["crack"] and entries["test/crack/c1_d4_a.png"]["types_map"] is None
    # what MVTec readers expect: ground_truth/<defect>/ holds exactly one <stem>_mask.png per test/<defect>/ image
    for folder in (out / "test").iterdir():
        if folder.name == "good":
            continue
        expected = sorted(f"{p.stem}_mask.png" for p in folder.iterdir())
        assert sorted(p.name for p in (out / "ground_truth" / folder.name).iterdir()) == expected
    assert sorted(p.name for p in (out / "ground_truth").iterdir()) == ["combined", "crack", "fold", "nut"]


def test_export_refuses_to_replace_foreign_folder_and_empty_store(tmp_path: Path) -> None:
    with _labelled_store(tmp_path / "ds") as store:
        foreign = tmp_path / "docs"
        foreign.mkdir()
        with pytest.raises(StoreError, match="not a previous export"):
            store.export_mvtec(foreign, overwrite=True)
        with pytest.raises(StoreError, match="unknown campaign 'zz'"):
            store.export_mvtec(tmp_path / "x", "zz")
    with CaptureStore(tmp_path / "empty", create=True) as empty:
        empty.start_campaign("c1", {})
        add(empty, "u1", "a")
        with pytest.raises(StoreError, match="nothing to export"):
            empty.export_mvtec(tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_cleanup_temp_removes_debris_of_dead_processes(store: CaptureStore) -> None:
    folder = store.root / "images" / "c1" / "p1"
    folder.mkdir(parents=True)
    dead = folder / f"{_files.TMP_PREFIX}999999999-a.png"
    dead.write_bytes(b"partial")
    mine = folder / f"{_files.TMP_PREFIX}{os.getpid()}-b.png"
    mine.write_bytes(b"partial")
    assert store.cleanup_temp() == 2
    assert not dead.exists() and not mine.exists()
