"""The hard simulated scene (issue 18, item 6): subtle defects and normal variation; the default is unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acquisition.sim.defects import SUBTLE_KINDS
from acquisition.sim.scene import Scene, SceneConfig


def small(**update) -> SceneConfig:
    return SceneConfig(sheet_width_m=0.06, sheet_height_m=0.05, **update)


def test_default_difficulty_is_the_scene_as_before():
    assert SceneConfig().difficulty == "default"
    a = Scene(small(), seed=3).new_part("p1", kind="defective")
    b = Scene(small(difficulty="default"), seed=3).new_part("p1", kind="defective")
    np.testing.assert_array_equal(a.albedo, b.albedo)


def test_hard_parts_have_subtle_kinds_and_vary_between_good_parts():
    scene = Scene(small(difficulty="hard"), seed=3)
    kinds = {d.kind for i in range(6) for d in scene.new_part(f"d{i}", kind="defective").defects}
    assert kinds and kinds <= set(SUBTLE_KINDS)
    # lighting drift: good hard sheets differ in mean brightness more than good default sheets do
    hard = [Scene(small(difficulty="hard"), seed=s).new_part("g", kind="good").albedo_gray.mean() for s in range(6)]
    default = [Scene(small(), seed=s).new_part("g", kind="good").albedo_gray.mean() for s in range(6)]
    assert np.std(hard) > 2 * np.std(default)


def _change(difficulty: str, kind: str, seed: int) -> tuple[float, int]:
    """Mean grey-level change inside the defect's mask and the mask's area (texels) of one ``kind`` defect, the
    hard scene's normal variation off (the same sheet rendered good is the reference)."""
    config = small(difficulty=difficulty, defects={"kinds": [kind], "count": (1, 1)})
    scene = Scene(config.model_copy(update={"hard": config.hard.model_copy(update={
        "lighting_drift": 0.0, "density_variation": 0.0, "glints": (0, 0)})}), seed=seed)
    part = scene.new_part("s", kind="defective")
    good = Scene(scene.config, seed=seed).new_part("s", kind="good")  # the same sheet without its defect
    diff = np.abs(part.albedo_gray.astype(float) - good.albedo_gray.astype(float))
    return float(diff[part.defect_mask()].mean()), int(part.defect_mask().sum())


def test_a_hard_stain_is_smaller_and_fainter_than_a_default_one():
    hard = [_change("hard", "stain", s) for s in range(3)]
    default = [_change("default", "stain", s) for s in range(3)]
    assert np.mean([c for c, _ in hard]) < np.mean([c for c, _ in default])
    assert np.mean([a for _, a in hard]) < 0.5 * np.mean([a for _, a in default])


@pytest.mark.parametrize("kind", SUBTLE_KINDS)
def test_every_subtle_defect_of_the_preset_is_visible(kind: str):
    """The preset was set by measurement: stains of 0.10-0.22 darkening and 0.8-2 mm thread gaps sat in the
    model's noise (AUROC 0.66 / 0.79); every subtle kind now changes its region by more than 15 of 255 grey levels
    on average (measured 20-54), still no more than the default scene's defects of that kind (plus a margin)."""
    for seed in range(3):
        change, area = _change("hard", kind, seed)
        assert area > 0 and change > 15.0
    assert np.mean([_change("hard", kind, s)[0] for s in range(3)]) < 1.2 * np.mean(
        [_change("default", kind, s)[0] for s in range(3)])


# sha256 prefixes (albedo : label map) of default-scene parts as rendered before the hard preset was tuned
# (commit 63340f5). A change here changes the default scene, which the issue forbids; a new OpenCV or NumPy
# that renders differently would also show here (then re-derive the hashes on the old commit).
DEFAULT_SCENE_HASHES = {
    "good": "2edaaa5cba683a75",
    "nut": "b8ab1ba8d88f6ea3:72c1fe812712c0da", "washer": "5797a30e0179d5e6:352542578e0871c8",
    "screwdriver": "1c899b9f3dc04c86:791222cd9665dd2f", "metal_part": "dc95f27e22613edf:fc00c2a888939731",
    "fold": "09fecc39d531a92d:8937aaea07756d4e", "stain": "547bc882fd8f121e:a860e15682f3f39a",
    "missing_thread": "9e6f05d47520c827:130c0c2b9c8068a3", "broken_thread": "c3a5779a0b069cb7:bf628097affb7a5c",
}


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def test_the_default_scene_renders_every_kind_as_before():
    from acquisition.sim.defects import DEFECT_KINDS

    got = {"good": _digest(Scene(small(), seed=3).new_part("p1", kind="good").albedo)}
    for kind in DEFECT_KINDS:
        config = SceneConfig(sheet_width_m=0.14, sheet_height_m=0.14, defects={"kinds": [kind], "count": (1, 1)})
        part = Scene(config, seed=3).new_part("p1", kind="defective")
        got[kind] = f"{_digest(part.albedo)}:{_digest(part.label_map)}"
    assert got == DEFAULT_SCENE_HASHES


def _hard(kind: str, contrast: float, **hard) -> SceneConfig:
    config = small(difficulty="hard", defects={"kinds": [kind], "count": (1, 1)})
    return config.model_copy(update={"hard": config.hard.model_copy(update={"defect_contrast": contrast, **hard})})


@pytest.mark.parametrize("kind", ["missing_thread", "broken_thread", "fold", "metal_part"])
def test_defect_contrast_changes_how_visible_a_defect_is_not_where_it_is(kind: str):
    """The sweep of bench_hard_preset relies on it: the same part at another strength has the same defect
    region, and a weaker strength changes the fabric less."""
    def part_and_change(contrast: float):
        # the normal variation off: it follows the defects in the part's random stream
        config = _hard(kind, contrast, lighting_drift=0.0, density_variation=0.0, glints=(0, 0))
        part = Scene(config, seed=4).new_part("d", kind="defective")
        good = Scene(config, seed=4).new_part("d", kind="good")
        diff = np.abs(part.albedo_gray.astype(float) - good.albedo_gray.astype(float))
        return part, float(diff[part.defect_mask()].mean())

    faint, faint_change = part_and_change(0.3)
    full, full_change = part_and_change(1.0)
    np.testing.assert_array_equal(faint.label_map, full.label_map)
    assert faint.defect_mask().any()
    assert faint_change < 0.6 * full_change


@pytest.mark.parametrize("key,value,says", [
    ("glints", [5, 2], "0 <= min <= max <= 100"),
    ("defect_contrast", 0, "greater than 0"),
    ("lighting_drift", 0.9, "less than or equal to 0.5"),
    ("contrast", 1.0, "unknown key 'scene.hard.contrast'"),
])
def test_a_bad_hard_knob_is_a_one_line_error_naming_the_file_and_key(tmp_path, key, value, says):
    import yaml

    from cell.cell_factory import load_cell_config
    from cell.config import ConfigFileError

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "cells" / "sim_hard.yaml").read_text())
    data["scene"]["hard"] = {key: value}
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigFileError) as info:
        load_cell_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and f"scene.hard.{key}" in message and says in message


def test_the_hard_cell_file_is_the_hard_preset_at_its_tuned_values():
    from cell.cell_factory import load_cell_config

    scene = load_cell_config(Path(__file__).resolve().parents[2] / "configs" / "cells" / "sim_hard.yaml").scene
    assert scene.difficulty == "hard"
    assert scene.hard == type(scene.hard)()  # the file uses the preset's defaults: one place holds the values
