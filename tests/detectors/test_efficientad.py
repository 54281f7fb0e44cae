"""EfficientAD: the PDN's shape and receptive field, the public teacher format, the distilled teacher, the hard
feature loss, the penalty folder, the training-side validation split, resumable training and the config file."""
from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectors import registry
from detectors.efficientad import EfficientAD, EfficientADConfig
from detectors.efficientad.autoencoder import Autoencoder
from detectors.efficientad.losses import hard_feature_loss, normalise_map
from detectors.efficientad.pdn import PDN, pdn_output_side
from detectors.efficientad.detector import split_validation
from detectors.efficientad.distillation import aligned_crop_corners, distil_pdn_teacher
from detectors.errors import DetectorConfigError, DetectorError, ImageSetError
from detectors.synthetic import add_defect, synthetic_imageset, textured_images
from tests.detectors.interrupting_progress import InterruptingProgress

REPO = Path(__file__).resolve().parents[2]
#: 6 steps of 2 images at 64 px with a random backbone teacher: plumbing tests.
_TINY = {**EfficientAD.smoke_config, "pretrained": "none", "iterations": 4, "batch_size": 2}


def test_pdn_small_output_grid_channels_and_receptive_field() -> None:
    pdn = PDN("small", 384)
    assert [getattr(pdn, f"conv{i}").out_channels for i in range(1, 5)] == [128, 256, 256, 384]
    x = torch.rand(1, 3, 256, 256, requires_grad=True)
    out = pdn(x)
    assert tuple(out.shape) == (1, 384, 56, 56) and pdn_output_side(256) == 56
    out[0, :, 20, 30].sum().backward()  # which input pixels one output cell sees
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
    assert rows.max() - rows.min() + 1 == 33 and cols.max() - cols.min() + 1 == 33


def test_pdn_medium_and_student_and_autoencoder_shapes() -> None:
    x = torch.rand(2, 3, 128, 128)
    assert tuple(PDN("medium", 384)(x).shape) == (2, 384, 24, 24)
    assert tuple(PDN("small", 768)(x).shape) == (2, 768, 24, 24)
    assert tuple(Autoencoder(128, 384)(x).shape) == (2, 384, 24, 24)


def test_hard_feature_loss_counts_only_the_hardest_differences() -> None:
    teacher = torch.zeros(1, 10, 10, 10)
    student = torch.zeros(1, 10, 10, 10)
    student.view(-1)[:5] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # 1000 differences, 5 non-zero
    # 0.999 quantile of 1000 values (linear interpolation, as torch.quantile): 16.009: the largest one only
    assert float(hard_feature_loss(teacher, student, 0.999)) == pytest.approx(25.0)
    # 0.996: 1 + 0.004 * 3: the four largest squared differences (4, 9, 16, 25)
    assert float(hard_feature_loss(teacher, student, 0.996)) == pytest.approx((4 + 9 + 16 + 25) / 4)
    distance = torch.rand(2, 8, 16, 16) ** 2
    threshold = torch.quantile(distance.flatten(), 0.9)
    assert float(hard_feature_loss(distance.sqrt(), torch.zeros_like(distance), 0.9)) == pytest.approx(
        float(distance[distance >= threshold].mean()))


def test_hard_feature_loss_matches_torch_quantile_at_the_paper_size() -> None:
    # one 256-px training image: 384 x 56 x 56 differences (the top-k path must pick the same order statistics)
    gen = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(1, 384, 56, 56, generator=gen), torch.randn(1, 384, 56, 56, generator=gen)
    distance = ((teacher - student) ** 2).flatten()
    threshold = torch.quantile(distance.double(), 0.999).float()
    expected = distance[distance >= threshold].mean()
    torch.testing.assert_close(hard_feature_loss(teacher, student, 0.999), expected, rtol=1e-6, atol=0)


def test_normalise_map_sends_the_quantiles_to_0_and_0_1() -> None:
    maps = torch.tensor([[2.0, 6.0, 10.0]])
    out = normalise_map(maps, torch.tensor(2.0), torch.tensor(10.0))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.05, 0.1]]))


def test_validation_images_are_held_out_of_training() -> None:
    train, val = split_validation(20, 0.1, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(20)) and not set(train) & set(val)
    assert split_validation(1, 0.1, seed=0) == ([0], [0])  # one image: it is both
    detector = EfficientAD(EfficientADConfig(**_TINY))
    stats = detector.fit(synthetic_imageset(5, size=64, seed=0))
    assert stats["n_train"] == 4 and stats["n_validation"] == 1 and stats["validation_held_out"]
    assert stats["penalty_images"] == 0  # no folder: the penalty term is dropped


def _save_public_teacher(path: Path, sequential: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    state = PDN("small", 384).state_dict()
    if sequential:  # the nn.Sequential numbering of the other public reproduction
        index = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8}
        torch.save({f"{index[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("sequential", [False, True])
def test_a_teacher_file_in_the_public_format_is_the_teacher(tmp_path: Path, sequential: bool) -> None:
    path = tmp_path / "teacher_small.pth"
    expected = _save_public_teacher(path, sequential)
    detector = EfficientAD(EfficientADConfig(**_TINY, teacher_weights=str(path)))
    train = synthetic_imageset(4, size=64, seed=0)
    stats = detector.fit(train)
    assert stats["teacher"] == "pdn"
    for key, value in expected.items():
        torch.testing.assert_close(detector.state_dict()[f"teacher.{key}"], value)
    # the model directory carries the teacher: it loads after the file is gone
    detector.save(tmp_path / "model")
    path.unlink()
    loaded = EfficientAD.load(tmp_path / "model")
    probe = textured_images(2, size=64, seed=3)
    np.testing.assert_array_equal(loaded.predict(probe).anomaly_map, detector.predict(probe).anomaly_map)


def test_a_teacher_file_that_does_not_fit_is_one_line_naming_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pth"
    state = PDN("small", 384).state_dict()
    state["conv4.weight"] = state["conv4.weight"][:100]
    torch.save(state, path)
    with pytest.raises(DetectorError, match=r"teacher.pth: tensor 'conv4.weight' has shape \(100,"):
        EfficientAD(EfficientADConfig(**_TINY, teacher_weights=str(path))).fit(synthetic_imageset(3, size=64, seed=0))
    with pytest.raises(DetectorError, match="not found"):
        EfficientAD(EfficientADConfig(**_TINY, teacher_weights=str(tmp_path / "nope.pth"))).fit(
            synthetic_imageset(3, size=64, seed=0))


#: _TINY with a PDN teacher distilled from the (random) backbone: 6 steps of 2 aligned 48-px windows.
_DISTILLED = {**_TINY, "teacher": "distilled", "distill_steps": 6, "distill_batch": 2, "distill_crop": 48}


def test_an_aligned_crop_gives_exactly_the_full_image_cells_it_covers() -> None:
    # what training the teacher on windows rests on: the PDN has no padding, so cell (r + i, c + j) of the
    # full image is cell (i, j) of the window whose corner is at pixel (4r, 4c)
    pdn = PDN("small", 16).eval()
    image = torch.rand(1, 3, 128, 128)
    rng = np.random.default_rng(0)
    corners = aligned_crop_corners(128, 64, 5, rng)
    assert all(0 <= r <= pdn_output_side(128) - pdn_output_side(64) for rc in corners for r in rc)
    with torch.no_grad():
        full = pdn(image)
        for r, c in corners:
            window = pdn(image[:, :, 4 * r : 4 * r + 64, 4 * c : 4 * c + 64])
            torch.testing.assert_close(window, full[:, :, r : r + 8, c : c + 8], rtol=1e-4, atol=1e-5)


def test_distillation_regresses_the_targets_and_refuses_a_window_off_the_stride() -> None:
    images = textured_images(4, size=64, seed=0)
    target_net = PDN("small", 8).eval()  # a learnable target: another PDN's outputs
    targets = lambda x: target_net(x)  # noqa: E731
    kwargs = dict(size="small", out_channels=8, batch=2, crop=48, lr=1e-3, weight_decay=0.0, seed=0,
                  device=torch.device("cpu"), autocast=contextlib.nullcontext)
    pdn, history = distil_pdn_teacher(targets, images, steps=40, **kwargs)
    assert len(history) == 40 and np.mean(history[-5:]) < 0.5 * np.mean(history[:5])
    assert not any(p.requires_grad for p in pdn.parameters())  # frozen once distilled
    with pytest.raises(DetectorError, match="distill_crop must be a multiple of 4"):
        distil_pdn_teacher(targets, images, steps=1, **{**kwargs, "crop": 50})


def test_a_distilled_teacher_is_saved_with_the_model_and_loads_without_distilling_again() -> None:
    train = synthetic_imageset(4, size=64, seed=0)
    watcher = InterruptingProgress()
    detector = EfficientAD(EfficientADConfig(**_DISTILLED))
    stats = detector.fit(train, progress=watcher)
    assert stats["teacher"] == "distilled" and len(stats["distill_loss"]) == 6
    # one progress count over both phases: 6 distillation steps, then the student's 4
    assert [d for d, _ in watcher.seen] == list(range(1, 11)) and {t for _, t in watcher.seen[:6]} == {
        f"teacher distillation {i}/6 loss {v:.4f}" for i, v in enumerate(stats["distill_loss"], start=1)}
    state = detector.state_dict()
    assert any(k.startswith("teacher.conv") for k in state) and not any(k.startswith("backbone.") for k in state)
    images = textured_images(2, size=64, seed=3)
    loaded = EfficientAD(EfficientADConfig(**_DISTILLED))
    loaded.load_state_dict(state)
    np.testing.assert_array_equal(loaded.predict(images).score, detector.predict(images).score)
    missing = {k: v for k, v in state.items() if not k.startswith("teacher.")}
    with pytest.raises(DetectorError, match="teacher.conv1.weight"):
        EfficientAD(EfficientADConfig(**_DISTILLED)).load_state_dict(missing)


@pytest.mark.parametrize("interrupt_at", [3, 8], ids=["during-distillation", "during-student"])
def test_training_with_a_distilled_teacher_resumes_where_it_stopped(tmp_path: Path, interrupt_at: int) -> None:
    train = synthetic_imageset(4, size=64, seed=0)
    config = EfficientADConfig(**_DISTILLED, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        EfficientAD(config).fit(train, progress=InterruptingProgress(at=interrupt_at))
    watcher = InterruptingProgress()
    resumed = EfficientAD(config)
    resumed.fit(train, progress=watcher)
    first = watcher.seen[1][0] if watcher.seen[0][1].startswith("resumed") else watcher.seen[0][0]
    assert first == {3: 3, 8: 9}[interrupt_at]  # after the last checkpoint: step 2 of 6, student step 2 of 4
    straight = EfficientAD(EfficientADConfig(**_DISTILLED))
    straight.fit(train)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)


def test_penalty_images_enter_the_loss(tmp_path: Path) -> None:
    folder = tmp_path / "penalty"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.png"), rng.integers(0, 255, (80, 90, 3), dtype=np.uint8))
    train = synthetic_imageset(4, size=64, seed=0)
    with_penalty = EfficientAD(EfficientADConfig(**_TINY, penalty_images=str(folder))).fit(train)
    without = EfficientAD(EfficientADConfig(**_TINY)).fit(train)
    assert with_penalty["penalty_images"] == 3
    assert with_penalty["loss_st"][0] > without["loss_st"][0]  # same first step, plus the penalty term
    assert with_penalty["loss_ae"][0] == without["loss_ae"][0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match="holds no image files"):
        EfficientAD(EfficientADConfig(**_TINY, penalty_images=str(tmp_path / "empty"))).fit(train)


def test_training_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    train = synthetic_imageset(4, size=64, seed=0)
    config = EfficientADConfig(**_TINY, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        EfficientAD(config).fit(train, progress=InterruptingProgress(at=3))  # steps 1-3 ran; checkpoint after step 2
    watcher = InterruptingProgress()
    resumed = EfficientAD(config)
    stats = resumed.fit(train, progress=watcher)
    assert stats["resumed_from"] == 2 and len(stats["loss"]) == 4
    assert [d for d, m in watcher.seen if m.startswith("step")] == [3, 4]
    straight = EfficientAD(EfficientADConfig(**_TINY))
    straight.fit(train)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)
    with pytest.raises(DetectorError, match="another run.*lr"):
        EfficientAD(EfficientADConfig(**{**config.model_dump(), "lr": 1e-4})).fit(train)


def test_defect_scores_above_good_images_and_map_peaks_on_it() -> None:
    detector = EfficientAD(EfficientADConfig(**EfficientAD.smoke_config))
    detector.fit(synthetic_imageset(6, size=64, seed=0))
    clean = textured_images(1, size=64, seed=42)[0]
    defective, mask = add_defect(clean, seed=1, scale=0.25)
    pred = detector.predict(torch.stack([clean, defective]))
    assert pred.score[1] > pred.score[0]
    assert pred.anomaly_map[1][mask.numpy()].mean() > pred.anomaly_map[1][~mask.numpy()].mean()


def test_a_map_below_the_validation_quantiles_everywhere_scores_below_zero() -> None:
    # The paper's zero-padded border made 0 the floor of every score: views whose normalised map is negative
    # everywhere all tied at exactly 0. With the edge-repeating border they keep their order.
    detector = EfficientAD(EfficientADConfig(**_TINY))
    detector.fit(synthetic_imageset(4, size=64, seed=0))
    detector.quantiles = detector.quantiles + 1e3  # every cell of every map far below its 0.9 quantile
    images = textured_images(2, size=64, seed=3)
    pred = detector.predict(images)
    assert (pred.score < 0).all() and (pred.anomaly_map < 0).all()
    assert pred.score[0] != pred.score[1]
    np.testing.assert_allclose(pred.score, pred.anomaly_map.reshape(2, -1).max(axis=1), rtol=1e-6)


def test_config_refuses_sizes_the_networks_cannot_take() -> None:
    with pytest.raises(DetectorConfigError, match="image_size"):
        registry.create("efficientad", image_size=100)
    with pytest.raises(DetectorConfigError, match="map_quantiles"):
        registry.create("efficientad", map_quantiles=(0.99, 0.9))
    with pytest.raises(DetectorConfigError, match="exclude each other"):
        registry.create("efficientad", teacher="distilled", teacher_weights="teacher_small.pth")
    with pytest.raises(DetectorConfigError, match="distill_crop"):
        registry.create("efficientad", teacher="distilled", distill_crop=98)


def test_config_file_validates() -> None:
    import yaml

    data = yaml.safe_load((REPO / "configs" / "detectors" / "efficientad.yaml").read_text())
    assert data["method"] == "efficientad"
    cfg = registry.validate_config("efficientad", data["config"])
    assert cfg.iterations < EfficientADConfig().iterations == 70_000  # the CPU recipe; class = paper


def test_cpu_bf16_training_runs_the_training_steps_in_bf16_and_predict_in_float32() -> None:
    dtypes: dict[str, list[torch.dtype]] = {"fit": [], "predict": []}
    phase = ["fit"]

    def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training:  # the training steps (the validation-quantile pass runs in eval mode)
            dtypes[phase[0]].append(output.dtype)
        elif phase[0] == "predict":
            dtypes["predict"].append(output.dtype)

    detector = EfficientAD(EfficientADConfig(**_TINY, cpu_bf16_training=True))
    original = detector._build_trainable

    def build_with_hook():
        student, autoencoder = original()
        student.conv4.register_forward_hook(record)
        return student, autoencoder

    detector._build_trainable = build_with_hook  # type: ignore[method-assign]
    detector.fit(synthetic_imageset(4, size=64, seed=0))
    phase[0] = "predict"
    pred = detector.predict(torch.rand(1, 3, 64, 64))
    assert dtypes["fit"] and set(dtypes["fit"]) == {torch.bfloat16}
    assert dtypes["predict"] == [torch.float32] and pred.anomaly_map.dtype == np.float32
    fp32 = EfficientAD(EfficientADConfig(**_TINY)).fit(synthetic_imageset(4, size=64, seed=0))
    bf16 = EfficientAD(EfficientADConfig(**_TINY, cpu_bf16_training=True)).fit(synthetic_imageset(4, size=64, seed=0))
    assert bf16["loss"] != fp32["loss"]  # the flag reaches the steps (bf16 rounding changes the losses)
    assert np.allclose(bf16["loss"], fp32["loss"], rtol=0.1)  # ... by rounding, not a different method
