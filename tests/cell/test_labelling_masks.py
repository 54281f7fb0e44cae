"""Mask logic of the labelling app: brush, eraser, polygon, flood fill, superpixels, undo/redo, wire
format, and carry-over across poses on the simulated cell (IoU with the simulation's true mask)."""
from __future__ import annotations

import numpy as np
import pytest

from cell.labelling import masks as M


# --- brush / eraser ----------------------------------------------------------------------------------
def test_single_point_brush_is_an_exact_disc():
    region = M.stroke_footprint((21, 21), [[10, 10]], 3.0)
    yy, xx = np.mgrid[0:21, 0:21]
    expected = (xx - 10) ** 2 + (yy - 10) ** 2 <= 9
    assert np.array_equal(region, expected)
    assert region.sum() == 29  # the lattice points of a radius-3 disc


def test_half_pixel_radius_paints_exactly_the_pixel_under_the_point():
    region = M.stroke_footprint((5, 7), [[3.2, 1.9]], 0.5)
    assert np.argwhere(region).tolist() == [[2, 3]]


def test_stroke_is_a_capsule_between_points_without_gaps():
    region = M.stroke_footprint((20, 40), [[5, 10], [30, 10]], 2.0)
    # every column between the end points is painted rows 8..12 exactly
    assert np.array_equal(np.flatnonzero(region[:, 17]), np.arange(8, 13))
    assert region[10, 3] and not region[10, 2]  # round cap of radius 2 at x = 5
    assert region[10, 32] and not region[10, 33]


def test_stroke_clipped_at_the_image_border_and_mask_binary():
    region = M.stroke_footprint((10, 10), [[-3, -3], [2, 2]], 2.5)
    assert region.dtype == bool and region[0, 0] and region.shape == (10, 10)


@pytest.mark.parametrize("radius", [0, -1, float("nan"), 1e9])
def test_bad_radius_is_refused(radius):
    with pytest.raises(M.MaskEditError, match="radius"):
        M.stroke_footprint((10, 10), [[1, 1]], radius)


def test_eraser_clears_only_its_footprint():
    mask = M.apply_region(np.zeros((30, 30), bool), M.stroke_footprint((30, 30), [[5, 15], [25, 15]], 3), True)
    erased = M.apply_region(mask, M.stroke_footprint((30, 30), [[15, 15]], 2), False)
    assert not erased[15, 15] and not erased[13, 15]
    assert erased[15, 8] and erased[15, 22]
    assert np.array_equal(erased | M.stroke_footprint((30, 30), [[15, 15]], 2) & mask, mask)


# --- polygon / flood -----------------------------------------------------------------------------------
def test_polygon_fill_is_binary_and_covers_the_rectangle():
    region = M.polygon_region((20, 20), [[2, 3], [12, 3], [12, 9], [2, 9]])
    assert region.sum() == 11 * 7
    assert region[3:10, 2:13].all()


def test_polygon_needs_three_vertices():
    with pytest.raises(M.MaskEditError, match="3 vertices"):
        M.polygon_region((20, 20), [[2, 3], [12, 3]])


def test_flood_fill_stays_within_tolerance_and_connectivity():
    image = np.full((20, 20), 100, np.uint8)
    image[5:10, 5:10] = 110          # connected blob, within tolerance 12 of 105? seeded inside: yes
    image[5:10, 12:15] = 111         # same values but separated by a wall of 200
    image[:, 11] = 200
    region = M.flood_region(image, (6, 6), tolerance=5)
    assert region[5:10, 5:10].all() and region.sum() == 25
    assert not region[5:10, 12:15].any()
    wide = M.flood_region(image, (6, 6), tolerance=10)
    assert wide[0, 0] and not wide[0, 11] and not wide[0, 15]


def test_flood_fill_rgb_and_limit():
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = np.arange(10)[None, :] * 10
    region = M.flood_region(image, (0, 0), tolerance=15)
    assert region[:, :2].all() and not region[:, 2:].any()
    limit = np.zeros((10, 10), bool)
    limit[:5] = True
    assert M.flood_region(image, (0, 0), 15, limit=limit).sum() == 10


def test_flood_seed_outside_image_is_refused():
    with pytest.raises(M.MaskEditError, match="outside"):
        M.flood_region(np.zeros((5, 5), np.uint8), (7, 1), 3)


# --- superpixels --------------------------------------------------------------------------------------
def _blocks_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.zeros((96, 128), np.uint8)
    for i in range(3):
        for j in range(4):
            image[i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32] = 40 + 17 * (i * 4 + j)
    return np.clip(image + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)


def test_superpixels_restricted_to_region_and_connected():
    image = _blocks_image()
    region = np.zeros(image.shape, bool)
    region[:, 32:] = True
    labels = M.compute_superpixels(image, region, target_size_px=16)
    assert (labels[~region] == 0).all() and (labels[region] > 0).all()
    assert labels.max() >= 8


def test_superpixel_click_adds_then_removes_whole_superpixel():
    image = _blocks_image()
    labels = M.compute_superpixels(image, None, target_size_px=16)
    mask = np.zeros(image.shape, bool)
    added = M.superpixel_edit(mask, labels, [[50, 50]], "toggle")
    sp = labels == labels[50, 50]
    assert np.array_equal(added, sp)
    removed = M.superpixel_edit(added, labels, [[50, 50]], "toggle")
    assert not removed.any()


def test_superpixel_drag_adds_every_superpixel_crossed():
    labels = np.repeat(np.arange(1, 9)[None, :], 16, axis=0).repeat(8, axis=1)  # 8 vertical stripes, 8 px wide
    mask = M.superpixel_edit(np.zeros(labels.shape, bool), labels, [[2, 5], [30, 5]], True)
    assert np.array_equal(mask, labels <= 4)
    mask = M.superpixel_edit(mask, labels, [[20, 9]], False)
    assert np.array_equal(mask, (labels <= 4) & (labels != 3))


def test_superpixel_labels_survive_rgb_encoding():
    labels = np.array([[0, 1, 255], [256, 65535, 70000]], dtype=np.int32)
    assert np.array_equal(M.decode_labels_rgb(M.encode_labels_rgb(labels)), labels)


def test_part_region_estimate_finds_bright_sheet_on_dark_table():
    image = np.full((200, 240), 30, np.uint8)
    image[40:170, 50:200] = 180
    region = M.estimate_part_region(image)
    assert region[100, 120] and not region[10, 10]
    assert abs(region.sum() - 130 * 150) < 0.05 * 130 * 150
    assert M.estimate_part_region(np.full((64, 64), 90, np.uint8)).all()  # no contrast: whole image


# --- undo / redo --------------------------------------------------------------------------------------
def test_undo_redo_restore_exact_masks():
    history = M.EditHistory()
    m0 = np.zeros((40, 40), bool)
    m1 = M.apply_region(m0, M.stroke_footprint(m0.shape, [[10, 10], [30, 12]], 3), True)
    m2 = M.apply_region(m1, M.stroke_footprint(m0.shape, [[20, 11]], 4), False)
    assert history.record(m0, m1) and history.record(m1, m2)
    assert not history.record(m2, m2.copy())  # a no-op edit is not an undo step
    back1 = history.undo(m2)
    assert np.array_equal(back1, m1)
    back0 = history.undo(back1)
    assert np.array_equal(back0, m0) and history.undo(back0) is None
    assert np.array_equal(history.redo(back0), m1)
    # a new edit drops the redo stack
    m3 = M.apply_region(m1, M.stroke_footprint(m0.shape, [[5, 35]], 2), True)
    history.record(m1, m3)
    assert not history.can_redo and np.array_equal(history.undo(m3), m1)


def test_history_is_bounded():
    history = M.EditHistory(max_steps=3)
    mask = np.zeros((8, 8), bool)
    for i in range(5):
        new = mask.copy()
        new[i, i] = True
        history.record(mask, new)
        mask = new
    steps = 0
    while (mask := history.undo(mask)) is not None:
        last = mask
        steps += 1
    assert steps == 3 and last[0, 0] and last[1, 1] and not last[2, 2]


# --- defect types per region ------------------------------------------------------------------------------
def _names(typed: M.TypedMask) -> np.ndarray:
    """(H, W) array of each pixel's type name ('' = no defect): compares typed masks whatever their order."""
    return np.array(("",) + typed.types, dtype=object)[typed.labels]


def test_typed_paint_retypes_and_erase_clears_any_type():
    empty = M.TypedMask.empty((20, 30))
    a = M.polygon_region(empty.shape, [[2, 2], [12, 2], [12, 12], [2, 12]])
    b = M.stroke_footprint(empty.shape, [[20, 5], [26, 15]], 2)
    typed = empty.paint(a, "scratch").paint(b, "crack")
    assert typed.types == ("scratch", "crack") and typed.labels.dtype == np.uint8
    assert (_names(typed)[a] == "scratch").all() and (_names(typed)[b] == "crack").all()
    assert np.array_equal(typed.mask, a | b)
    over = M.stroke_footprint(empty.shape, [[10, 7]], 3)  # crack painted over part of the scratch
    retyped = typed.paint(over, "crack")
    assert (_names(retyped)[over] == "crack").all() and (_names(retyped)[a & ~over] == "scratch").all()
    # the eraser clears whatever type is under it; a type no pixel has left is dropped from the list
    cleared = retyped.erase(b | over)
    assert cleared.types == ("scratch",) and np.array_equal(cleared.mask, a & ~over) and set(np.unique(cleared.labels)) == {0, 1}
    assert retyped.erase(a | b | over).types == () and not retyped.erase(a | b | over).mask.any()
    # overlay: the other mask's pixels with their types on top
    carried = M.TypedMask.empty(empty.shape).paint(b, "hole")
    merged = typed.overlay(carried)
    assert (_names(merged)[b] == "hole").all() and (_names(merged)[a & ~b] == "scratch").all()
    assert merged.types == ("scratch", "hole") and merged.retype("dent").types == ("dent",)


def test_typed_undo_redo_restore_types_by_name():
    history = M.EditHistory()
    t0 = M.TypedMask.empty((16, 16))
    t1 = t0.paint(M.polygon_region(t0.shape, [[1, 1], [6, 1], [6, 6], [1, 6]]), "scratch")
    t2 = t1.paint(M.polygon_region(t0.shape, [[4, 4], [12, 4], [12, 12], [4, 12]]), "crack")
    t3 = t2.erase(M.polygon_region(t0.shape, [[0, 0], [15, 0], [15, 6], [0, 6]]))  # scratch gone: renumbered
    assert t3.types == ("crack",)
    for before, after in ((t0, t1), (t1, t2), (t2, t3)):
        assert history.record(before, after)
    assert not history.record(t3, M.TypedMask(t3.labels.copy(), t3.types))
    back2 = history.undo(t3)
    assert back2.same_as(t2) and np.array_equal(_names(back2), _names(t2))
    back1 = history.undo(back2)
    assert back1.same_as(t1) and back1.types == ("scratch",)
    assert history.redo(back1).same_as(t2) and not t1.same_as(t2)


def test_label_runs_roundtrip_and_checks():
    labels = np.zeros((5, 7), np.uint8)
    labels[1, 1:4] = 1
    labels[1, 4:6] = 2
    labels[3, 0:2] = 2
    runs = M.label_runs(labels)
    assert runs == [1, 3, 2, 4]
    assert np.array_equal(M.labels_from_runs(labels > 0, runs), labels)
    assert M.label_runs(np.zeros((3, 3), np.uint8)) == []
    with pytest.raises(M.MaskEditError, match="cover 6 pixels, the mask has 7"):
        M.labels_from_runs(labels > 0, [1, 6])


def test_packed_bits_roundtrip_and_length_check():
    rng = np.random.default_rng(1)
    mask = rng.random((13, 7)) > 0.5
    assert np.array_equal(M.unpack_bits(M.pack_bits(mask), mask.shape), mask)
    with pytest.raises(M.MaskEditError):
        M.unpack_bits(b"\x00", (13, 7))


# --- carry-over on the simulated cell -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    from cell.labelling.simdata import make_sim_dataset

    root = make_sim_dataset(tmp_path_factory.mktemp("labelling") / "ds", max_poses=4, seed=7)
    from cell.commands.label import build_app

    app = build_app(root)
    yield app
    app.close()
    app.store.close()


def test_carried_mask_matches_the_simulation_true_mask(sim_store):
    from cell.labelling.carry import carry_mask

    app = sim_store
    records = app.store.captures()
    assert len(records) >= 3
    source = records[0]
    mask, _, _ = app.store.get_mask(source.id)
    assert mask.sum() > 200, "the chosen pose must see a defect"
    geometry = app.geometry(source)
    assert geometry is not None
    for target in records[1:]:
        truth, _, _ = app.store.get_mask(target.id)
        carried = carry_mask(mask, geometry, source.actual_pose, target.actual_pose)
        assert M.iou(carried, truth) >= 0.9, target.pose_id
        # the poses differ: carrying is not the identity
        assert not np.array_equal(carried, mask)


def test_sim_masks_have_their_sim_defect_types_and_carry_keeps_them(sim_store):
    from cell.labelling.carry import carry_labels, carry_mask

    app = sim_store
    records = app.store.captures()
    for rec in records:
        labels, types, _ = app.store.mask_labels(rec.id)
        info = app.store.mask_info(rec.id)
        assert info.source == "sim" and np.array_equal(labels > 0, app.store.get_mask(rec.id)[0])
        assert types == (rec.extra["sim_defect_types"] if labels.any() else [])
        assert info.defect_type == rec.extra["sim_defect_type"]
    source, target = records[0], records[1]
    labels, types, _ = app.store.mask_labels(source.id)
    geometry = app.geometry(source)
    carried = carry_labels(labels, geometry, source.actual_pose, target.actual_pose)
    assert carried.dtype == np.uint8 and set(np.unique(carried)) <= set(range(len(types) + 1))
    assert np.array_equal(carried > 0, carry_mask(labels > 0, geometry, source.actual_pose, target.actual_pose))
    # a two-type map: every carried pixel keeps exactly the type of the pixel it comes from
    two = labels.copy()
    two[:, : labels.shape[1] // 2][two[:, : labels.shape[1] // 2] > 0] = len(types) + 1
    carried_two = carry_labels(two, geometry, source.actual_pose, target.actual_pose)
    assert np.array_equal(carried_two > 0, carried > 0)
    assert set(np.unique(carried_two[carried > 0])) == set(np.unique(two[two > 0]))


def test_carry_window_equals_full_warp(sim_store):
    from calibration.homography import warp_image_between_poses
    from cell.labelling.carry import carry_mask

    app = sim_store
    a, b = app.store.captures()[:2]
    mask, _, _ = app.store.get_mask(a.id)
    g = app.geometry(a)
    full = warp_image_between_poses(mask.astype(np.uint8), g.camera, g.camera_pose(a.actual_pose),
                                    g.camera_pose(b.actual_pose), g.plane_point, g.plane_normal).astype(bool)
    assert np.array_equal(carry_mask(mask, g, a.actual_pose, b.actual_pose), full)


def test_carry_size_mismatch_is_a_clear_error(sim_store):
    from cell.labelling.carry import CarryError, carry_mask

    app = sim_store
    rec = app.store.captures()[0]
    with pytest.raises(CarryError, match="camera model"):
        carry_mask(np.zeros((10, 10), bool), app.geometry(rec), rec.actual_pose, rec.actual_pose)


def test_geometry_resolver_prefers_the_geometry_recorded_by_the_campaign():
    from types import SimpleNamespace

    from calibration.camera_model import CameraModel
    from calibration.transforms import Transform
    from cell.labelling.carry import GeometryResolver

    cam = CameraModel(640, 512, 900.0, 900.0, 320.0, 256.0, dist=(-0.05, 0.01, 0.0, 0.0, 0.0))
    config = {
        "plan": {"part_center_pose": [0.1, -0.4, 0.02, 0.0, 0.0, 0.0]},
        "geometry": {"camera_model": cam.to_dict(), "T_flange_cam": [0.01, 0.0, 0.08, 0.0, 0.0, 0.1]},
    }
    record = SimpleNamespace(campaign="c", width=640, height=512, extra={}, actual_pose=(0.0,) * 6)
    geometry = GeometryResolver(lambda name: config)(record)
    assert geometry.camera == cam
    assert np.allclose(geometry.T_flange_cam.to_pose(), [0.01, 0.0, 0.08, 0.0, 0.0, 0.1])
    assert np.allclose(geometry.plane_point, [0.1, -0.4, 0.02]) and np.allclose(geometry.plane_normal, [0, 0, 1])
    assert "recorded by campaign c" in geometry.source
    # an explicit calibration wins; a plane height overrides the plan; nothing known -> None
    explicit = GeometryResolver(lambda name: config, cam, Transform.identity(), plane_z_m=0.005)(record)
    assert np.allclose(explicit.T_flange_cam.matrix, np.eye(4)) and np.isclose(explicit.plane_point[2], 0.005)
    assert GeometryResolver(lambda name: {})(record) is None


def test_display_png_keeps_colour_order_and_scales_16_bit():
    import cv2

    from cell.labelling.api import display_png

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    decoded = cv2.imdecode(np.frombuffer(display_png(rgb), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (4, 5, 3) and (decoded[..., 2] == 200).all() and (decoded[..., 0] == 0).all()  # BGR on disk
    mono16 = np.full((3, 3), 0x8040, np.uint16)
    decoded = cv2.imdecode(np.frombuffer(display_png(mono16), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint8 and (decoded == 0x80).all()
    region = M.estimate_part_region(np.full((64, 64, 3), 90, np.uint8))
    assert region.all()
