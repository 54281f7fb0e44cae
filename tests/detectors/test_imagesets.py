"""Image sets: MVTec-layout folders, in-memory sets, hold-out splits, and clear errors for bad data."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectors.errors import DetectorConfigError, ImageSetError
from detectors.imagesets import InMemoryImageSet, MVTecImageSet, check_images, split_holdout


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """A 3-good-train, 2-good + 2-crack test MVTec folder of 20x30 images (one grayscale)."""
    root = tmp_path / "widget"
    rng = np.random.default_rng(0)
    for i in range(3):
        _write(root / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _write(root / "test" / "good" / "000.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _write(root / "test" / "good" / "001.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))  # grayscale
    for i in range(2):
        _write(root / "test" / "crack" / f"{i:03d}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10, 10 + i : 20] = 255
        _write(root / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return root


def test_train_split_reads_good_images_as_rgb_float(tiny_mvtec: Path) -> None:
    train = MVTecImageSet(tiny_mvtec, "train", image_size=None)
    assert len(train) == 3
    assert train.labels.tolist() == [0, 0, 0]
    sample = train[0]
    assert sample.image.dtype == torch.float32 and sample.image.shape == (3, 20, 30)
    bgr = cv2.imread(str(tiny_mvtec / "train" / "good" / "000.png"))
    expected = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(sample.image, expected)
    assert sample.mask is not None and not sample.mask.any()
    assert sample.source == "widget/train/good/000.png"
    assert sample.sha256 == hashlib.sha256((tiny_mvtec / "train/good/000.png").read_bytes()).hexdigest()


def test_test_split_labels_masks_and_grayscale(tiny_mvtec: Path) -> None:
    test = MVTecImageSet(tiny_mvtec, "test", image_size=None)
    assert test.defect_types == ["crack", "crack", "good", "good"]
    assert test.labels.tolist() == [1, 1, 0, 0]
    masks = test.stack_masks()
    assert masks.shape == (4, 20, 30) and masks.dtype == torch.bool
    assert int(masks[0].sum()) == 5 * 10 and int(masks[1].sum()) == 5 * 9
    assert not masks[2:].any()
    gray = test[3].image
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_resize_bilinear_images_nearest_masks(tiny_mvtec: Path) -> None:
    test = MVTecImageSet(tiny_mvtec, "test", image_size=(40, 60))
    images, masks = test.stack_images(), test.stack_masks()
    assert images.shape == (4, 3, 40, 60) and masks.shape == (4, 40, 60)
    # nearest-neighbour upsampling by 2 keeps the mask binary and exactly 4x its area
    assert int(masks[0].sum()) == 4 * 50
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    square = MVTecImageSet(tiny_mvtec, "train", image_size=16)
    assert square.stack_images().shape == (3, 3, 16, 16)


def test_filters_and_provenance(tiny_mvtec: Path) -> None:
    test = MVTecImageSet(tiny_mvtec, "test", image_size=None, defect_types=["crack"], max_per_type=1)
    assert len(test) == 1 and test.defect_types == ["crack"]
    provenance = test.provenance()
    assert provenance == [
        {
            "source": "widget/test/crack/000.png",
            "sha256": hashlib.sha256((tiny_mvtec / "test/crack/000.png").read_bytes()).hexdigest(),
        }
    ]
    with pytest.raises(ImageSetError, match="no folder for defect type 'scratch'"):
        MVTecImageSet(tiny_mvtec, "test", defect_types=["scratch"])


def test_mixed_sizes_need_image_size(tiny_mvtec: Path) -> None:
    _write(tiny_mvtec / "train" / "good" / "003.png", np.zeros((10, 10, 3), np.uint8))
    train = MVTecImageSet(tiny_mvtec, "train", image_size=None)
    with pytest.raises(ImageSetError, match=r"003\.png: size \(10, 10\) differs.*set image_size"):
        train.stack_images()


def test_bad_folders_and_files_name_the_path(tiny_mvtec: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageSetError, match="not a folder"):
        MVTecImageSet(tmp_path / "absent")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ImageSetError, match=r"empty/train: no image files"):
        MVTecImageSet(tmp_path / "empty")
    (tiny_mvtec / "train" / "good" / "001.png").write_bytes(b"garbage")
    train = MVTecImageSet(tiny_mvtec, "train")
    with pytest.raises(ImageSetError, match=r"001\.png: not a readable image file"):
        train.stack_images()
    _write(tiny_mvtec / "train" / "good" / "001.png", np.zeros((20, 30, 4), np.uint8))
    with pytest.raises(ImageSetError, match=r"001\.png: 4 channels"):
        MVTecImageSet(tiny_mvtec, "train")[1]
    (tiny_mvtec / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(ImageSetError, match=r"001_mask\.png: missing mask"):
        MVTecImageSet(tiny_mvtec, "test")[1]
    with pytest.raises(DetectorConfigError, match="split must be"):
        MVTecImageSet(tiny_mvtec, "val")


def test_in_memory_set_defaults_and_checks() -> None:
    images = torch.rand(4, 3, 8, 8)
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[3, 2:4, 2:4] = True
    imageset = InMemoryImageSet(images, masks=masks, labels=[0, 0, 0, 1], sha256s=["a", "b", "c", "d"])
    assert len(imageset) == 4 and imageset.defect_types == ["good", "good", "good", "defect"]
    assert torch.equal(imageset.stack_images(), images)
    assert torch.equal(imageset.stack_masks(), masks)
    assert imageset.provenance()[3] == {"source": "memory:3", "sha256": "d"}
    assert [b.shape[0] for b in imageset.batches(3)] == [3, 1]
    uint8 = InMemoryImageSet(np.full((1, 3, 2, 2), 255, np.uint8))
    assert float(uint8[0].image.max()) == 1.0

    with pytest.raises(ImageSetError, match=r"memory:0: expected an image of shape \(3, H, W\)"):
        InMemoryImageSet(torch.rand(2, 1, 8, 8))
    with pytest.raises(ImageSetError, match=r"pixel values must lie in \[0, 1\]"):
        InMemoryImageSet(torch.rand(1, 3, 4, 4) * 3)
    with pytest.raises(ImageSetError, match="labels: 2 entries for 4 images"):
        InMemoryImageSet(images, labels=[0, 1])
    with pytest.raises(ImageSetError, match="defective sample has no mask"):
        InMemoryImageSet(images, labels=[0, 0, 0, 1]).stack_masks()


def test_empty_set_cannot_be_stacked() -> None:
    empty = InMemoryImageSet(torch.empty(0, 3, 8, 8))
    assert len(empty) == 0
    with pytest.raises(ImageSetError, match="empty image set"):
        empty.stack_images()


def test_split_holdout_is_seeded_stratified_and_disjoint() -> None:
    labels = [0] * 10 + [1] * 4
    imageset = InMemoryImageSet(torch.rand(14, 3, 4, 4), labels=labels, masks=[None] * 14)
    train, holdout = split_holdout(imageset, 0.25, seed=3)
    assert len(train) + len(holdout) == 14
    assert set(train.sources).isdisjoint(holdout.sources)
    assert int(holdout.labels.sum()) == 1 and int((holdout.labels == 0).sum()) == 2  # round(.25*4), round(2.5)
    again_train, again_holdout = split_holdout(imageset, 0.25, seed=3)
    assert holdout.sources == again_holdout.sources
    other = split_holdout(imageset, 0.25, seed=4)[1]
    assert other.sources != holdout.sources or len(holdout) == 0
    with pytest.raises(DetectorConfigError, match=r"fraction must be in \(0, 1\)"):
        split_holdout(imageset, 1.0, seed=0)
    with pytest.raises(ImageSetError, match="too few"):
        split_holdout(InMemoryImageSet(torch.rand(1, 3, 4, 4)), 0.5, seed=0)


def test_check_images_rejects_wrong_layouts() -> None:
    assert check_images(torch.rand(2, 3, 4, 4)).dtype == torch.float32
    with pytest.raises(ImageSetError, match="3 channels"):
        check_images(torch.rand(2, 4, 4, 4))
    with pytest.raises(ImageSetError, match=r"shape \(B, 3, H, W\)"):
        check_images(torch.rand(3, 4, 4))
    with pytest.raises(ImageSetError, match="float"):
        check_images(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_real_bottle_subset(data_root: Path) -> None:
    bottle = data_root / "bottle"
    if not bottle.is_dir():
        pytest.skip(f"{bottle} not found")
    test = MVTecImageSet(bottle, "test", image_size=128, max_per_type=2)
    assert len(test) == 8 and int(test.labels.sum()) == 6
    masks = test.stack_masks()
    assert masks.shape == (8, 128, 128)
    assert masks[test.labels == 1].flatten(1).any(dim=1).all(), "every defective bottle has a non-empty mask"


def test_real_magnetic_tile_grayscale_jpg(data_root: Path) -> None:
    tiles = data_root / "magnetic_tile"
    if not tiles.is_dir():
        pytest.skip(f"{tiles} not found")
    train = MVTecImageSet(tiles, "train", image_size=64, max_per_type=3)
    images = train.stack_images()
    assert images.shape == (3, 3, 64, 64)
    assert torch.equal(images[:, 0], images[:, 1])


def test_synthetic_imageset_is_seeded_with_exact_masks() -> None:
    from detectors.synthetic import add_defect, synthetic_imageset, textured_images

    imageset = synthetic_imageset(3, 3, size=32, seed=5, kind="scratch")
    assert imageset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    masks = imageset.stack_masks()
    assert not masks[:3].any() and masks[3:].flatten(1).any(dim=1).all()
    assert torch.equal(imageset.stack_images(), synthetic_imageset(3, 3, size=32, seed=5, kind="scratch").stack_images())
    clean = textured_images(1, size=32, seed=1)[0]
    for kind in ("blob", "patch", "scratch"):
        defective, mask = add_defect(clean, kind, seed=2)
        changed = (defective != clean).any(dim=0)
        assert changed.any() and not (changed & ~mask).any(), f"{kind}: pixels changed outside the mask"
    with pytest.raises(DetectorConfigError, match="defect kind 'hole' unknown"):
        add_defect(clean, "hole")  # type: ignore[arg-type]


def test_to_image_tensor_converts_frames() -> None:
    from detectors.imagesets import to_image_tensor

    gray = np.array([[0, 255], [51, 102]], np.uint8)
    tensor = to_image_tensor(gray)
    assert tensor.shape == (3, 2, 2) and tensor.dtype == torch.float32
    assert torch.allclose(tensor[1], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[..., 2] = 65535
    assert torch.equal(to_image_tensor(rgb16)[2], torch.ones(2, 3))
    assert torch.equal(to_image_tensor(np.full((2, 2, 1), 0.5, np.float32)), torch.full((3, 2, 2), 0.5))
    with pytest.raises(ImageSetError, match=r"frame 7: expected \(H, W\)"):
        to_image_tensor(np.zeros((2, 2, 4), np.uint8), "frame 7")
    with pytest.raises(ImageSetError, match=r"pixel values must lie in \[0, 1\]"):
        to_image_tensor(np.full((2, 2), 2.0))
