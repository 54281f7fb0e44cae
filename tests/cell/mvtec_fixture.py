"""A small synthetic MVTec-layout folder (woven texture, painted defects with exact masks) for CLI tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from detectors.synthetic import add_defect, textured_images


def _save(path: Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR))


def make_mvtec_folder(root: Path, n_train: int = 10, n_test_good: int = 4, n_test_defect: int = 4,
                      size: int = 64) -> Path:
    """root/train/good, root/test/{good,blob}, root/ground_truth/blob/<stem>_mask.png."""
    images = textured_images(n_train + n_test_good + n_test_defect, size=size, seed=3)
    for i in range(n_train):
        _save(root / "train" / "good" / f"{i:03d}.png", images[i])
    for i in range(n_test_good):
        _save(root / "test" / "good" / f"{i:03d}.png", images[n_train + i])
    rng = np.random.default_rng(7)
    for i in range(n_test_defect):
        image = images[n_train + n_test_good + i]
        defective, mask = add_defect(image, kind="blob", seed=int(rng.integers(1 << 30)), scale=0.25)
        _save(root / "test" / "blob" / f"{i:03d}.png", defective)
        mask_path = root / "ground_truth" / "blob" / f"{i:03d}_mask.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(mask_path), np.asarray(mask, dtype=np.uint8) * 255)
    return root


def write_detector_config(path: Path, method: str, config: dict, **sections) -> Path:
    """A detector config file in the format `cell train` reads."""
    document = {"method": method, "config": dict(config), **sections}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path
