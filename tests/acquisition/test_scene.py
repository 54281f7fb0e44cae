"""The simulated scene: woven sheets, placement, defects and their exact regions, calibration boards."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from acquisition.sim.defects import DEFECT_KINDS, FOREIGN_OBJECT_KINDS
from acquisition.sim.fabric import FabricConfig, TexelGrid, make_weave, render_sheet
from acquisition.sim.scene import Scene, SceneConfig
from calibration.transforms import Transform


def small_config(**defects) -> SceneConfig:
    """A 60 x 50 mm sheet at 0.1 mm texels (600 x 500): fast to generate."""
    return SceneConfig(
        sheet_width_m=0.06,
        sheet_height_m=0.05,
        defects={"kinds": ["nut", "washer", "stain", "missing_thread", "broken_thread", "metal_part"], **defects},
    )


def test_same_seed_and_id_give_the_same_part_and_others_differ():
    a = Scene(small_config(), seed=7).new_part("P-001", kind="defective")
    b = Scene(small_config(), seed=7).new_part("P-001", kind="defective")
    c = Scene(small_config(), seed=7).new_part("P-002", kind="defective")
    d = Scene(small_config(), seed=8).new_part("P-001", kind="defective")
    assert np.array_equal(a.albedo, b.albedo)
    assert np.array_equal(a.label_map, b.label_map)
    assert np.allclose(a.T_base_part.matrix, b.T_base_part.matrix)
    assert [x.kind for x in a.defects] == [x.kind for x in b.defects]
    for other in (c, d):
        assert not np.array_equal(a.albedo, other.albedo)
        assert not np.allclose(a.T_base_part.matrix, other.T_base_part.matrix)


def test_weave_is_visible_as_a_periodic_pattern_at_the_tow_pitch():
    cfg = FabricConfig()
    weave = make_weave(cfg, (300, 400), 1e-4, np.random.default_rng(0))
    grey = render_sheet(weave).mean(axis=2) / 255.0
    profile = grey.mean(axis=0) - grey.mean()  # average down the columns: warp tows and gaps alternate
    spectrum = np.abs(np.fft.rfft(profile))
    freqs = np.fft.rfftfreq(profile.size)
    peak = freqs[np.argmax(spectrum[1:]) + 1]
    expected = 1e-4 / cfg.tow_pitch_m  # cycles per texel
    assert abs(peak - expected) / expected < 0.15
    assert grey.std() > 0.05  # contrast between tows and gaps
    assert 0.0 <= grey.min() and grey.max() <= 1.0


def test_good_parts_have_no_defects_and_defective_ones_one_to_three():
    scene = Scene(small_config(), seed=1)
    good = scene.new_part("G", kind="good")
    assert not good.is_defective and good.defects == [] and not good.label_map.any()
    for i in range(4):
        part = scene.new_part(f"D{i}", kind="defective")
        assert part.is_defective and 1 <= len(part.defects) <= 3
        labels = set(np.unique(part.label_map)) - {0}
        assert labels == {d.label for d in part.defects}


def test_unspecified_kind_follows_the_probability():
    always = Scene(small_config(probability=1.0), seed=0)
    never = Scene(small_config(probability=0.0), seed=0)
    assert always.new_part("x").is_defective
    assert not never.new_part("x").is_defective


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_kind_changes_the_sheet_exactly_inside_its_mask(kind):
    big = kind in ("screwdriver", "fold")  # long defects: a larger sheet at a coarser texel to stay fast
    size, texel = (0.14, 2e-4) if big else (0.05, 1e-4)
    cfg = SceneConfig(
        sheet_width_m=size, sheet_height_m=size, texel_size_m=texel, defects={"kinds": [kind], "count": (1, 1)}
    )
    scene = Scene(cfg, seed=3)
    good = scene.new_part("same", kind="good")
    bad = scene.new_part("same", kind="defective")  # same weave: a forced kind draws no extra random number
    (defect,) = bad.defects
    assert defect.kind == kind
    mask = bad.defect_mask()
    changed = np.any(good.albedo != bad.albedo, axis=2)
    # nothing outside the mask changed except anti-aliased rims one texel wide
    rim = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert not (changed & ~rim).any()
    # most of the mask did change (a missing tow is partly hidden under crossing tows anyway)
    assert changed[mask].mean() > 0.3
    # the defect's geometry in part coordinates is consistent with its mask
    r0, c0 = defect.texel_origin
    vv, uu = np.nonzero(defect.mask)
    xy = bad.grid.to_part(np.stack([uu + c0, vv + r0], axis=-1))
    x0, y0, x1, y1 = defect.bbox_m
    assert (xy[:, 0] >= x0).all() and (xy[:, 0] <= x1).all() and (xy[:, 1] >= y0).all() and (xy[:, 1] <= y1).all()
    hull = defect.polygon_m.astype(np.float32).reshape(-1, 1, 2)
    inside = [cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in xy[:: max(1, len(xy) // 200)]]
    assert all(inside)


def test_foreign_objects_are_drawn_opaque():
    cfg = SceneConfig(sheet_width_m=0.05, sheet_height_m=0.05, defects={"kinds": ["washer"], "count": (1, 1)})
    scene = Scene(cfg, seed=11)
    good = scene.new_part("w", kind="good")
    bad = scene.new_part("w", kind="defective")
    assert "washer" in FOREIGN_OBJECT_KINDS
    core = cv2.erode(bad.defect_mask().astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # inside the washer the weave no longer shows: its texture correlates with nothing of the sheet below
    diff = np.abs(good.albedo_gray[core].astype(int) - bad.albedo_gray[core].astype(int))
    assert diff.mean() > 15


def test_placement_jitter_stays_within_the_configured_bounds():
    cfg = small_config()
    cfg.placement.jitter_mm = 3.0
    cfg.placement.jitter_deg = 2.0
    scene = Scene(cfg, seed=5)
    nominal = scene.nominal_T_base_part
    offsets, angles = [], []
    for i in range(5):
        part = scene.new_part(f"p{i}", kind="good")
        delta = nominal.inverse() @ part.T_base_part
        offsets.append(np.abs(delta.translation[:2]).max())
        angles.append(abs(np.rad2deg(delta.to_pose()[5])))
        assert abs(delta.translation[2]) < 1e-12  # on the table plane
        assert np.allclose(delta.rotation[:, 2], [0, 0, 1])  # lying flat
    assert max(offsets) <= 3e-3 + 1e-12 and max(angles) <= 2.0 + 1e-9
    assert max(offsets) > 0.3e-3 and max(angles) > 0.1  # it does vary


def test_texel_grid_maps_to_the_part_frame_unmirrored():
    grid = TexelGrid((500, 600), 1e-4)
    assert grid.size_m == pytest.approx((0.06, 0.05))
    corners = grid.to_part(np.array([[-0.5, -0.5], [599.5, 499.5]]))
    assert np.allclose(corners, [[-0.03, 0.025], [0.03, -0.025]])  # top-left texel corner is at -x, +y
    uv = np.random.default_rng(0).uniform(0, 500, (10, 2))
    assert np.allclose(grid.to_texel(grid.to_part(uv)), uv)
    A = grid.part_to_texel_matrix()
    xy = grid.to_part(uv)
    assert np.allclose((np.c_[xy, np.ones(10)] @ A.T)[:, :2], uv)


def test_new_part_loads_it_and_set_board_replaces_it():
    scene = Scene(small_config(), seed=0)
    part = scene.new_part("a", kind="good")
    assert scene.current_part is part and scene.surface.part_id == "a"
    other = scene.new_part("b", kind="good", load=False)
    assert scene.current_part is part
    scene.load_part(other)
    assert scene.current_part is other
    board = np.zeros((100, 120), np.uint8)
    scene.set_board(board, 1e-3, Transform.identity())
    assert scene.current_part is None and scene.surface.labels is None
    scene.clear()
    assert scene.surface is None


def test_bad_inputs_are_refused_with_a_clear_message():
    scene = Scene(small_config(), seed=0)
    with pytest.raises(ValueError, match="kind"):
        scene.new_part("x", kind="broken")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        scene.set_board(np.zeros((10, 10), np.float32), 1e-3, Transform.identity())
    with pytest.raises(ValueError, match="pixel_size_m"):
        scene.set_board(np.zeros((10, 10), np.uint8), 0.0, Transform.identity())
    with pytest.raises(ValidationError, match="extra"):
        SceneConfig(sheet_widht_m=0.3)
    with pytest.raises(ValidationError, match="unknown defect kind"):
        SceneConfig(defects={"kinds": ["scratch"]})
    with pytest.raises(ValidationError, match="texels per tow"):
        SceneConfig(texel_size_m=1e-3)
    with pytest.raises(ValidationError, match="M texels"):
        SceneConfig(sheet_width_m=1.0, sheet_height_m=1.0, texel_size_m=1e-4)
    tiny = Scene(SceneConfig(sheet_width_m=0.01, sheet_height_m=0.01, defects={"kinds": ["screwdriver"]}), seed=0)
    with pytest.raises(ValueError, match="fits"):
        tiny.new_part("x", kind="defective")
