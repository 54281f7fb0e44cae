"""The hard simulated scene (issue 18, item 6): subtle defects and normal variation; the default is unchanged."""
from __future__ import annotations

import numpy as np

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


def test_a_hard_stain_is_fainter_than_a_default_one():
    def contrast(difficulty: str) -> float:
        config = small(difficulty=difficulty, defects={"kinds": ["stain"], "count": (1, 1)})
        scene = Scene(config.model_copy(update={"hard": config.hard.model_copy(update={
            "lighting_drift": 0.0, "density_variation": 0.0, "glints": (0, 0)})}), seed=5)
        part = scene.new_part("s", kind="defective")
        good = Scene(scene.config, seed=5).new_part("s", kind="good")  # the same sheet without its defect
        diff = np.abs(part.albedo_gray.astype(float) - good.albedo_gray.astype(float))
        return float(diff[part.defect_mask()].mean())

    assert contrast("hard") < 0.5 * contrast("default")
