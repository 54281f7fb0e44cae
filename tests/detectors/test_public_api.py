"""The public API of :mod:`detectors`: this test fails when a public name disappears or is renamed.

Adding names is fine; removing or renaming one breaks callers (cell/, benchmarks, users' scripts) and must
be a deliberate change of this list.
"""
from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_API: dict[str, list[str]] = {
    "detectors": [
        "Detector", "DetectorConfig", "DetectorError", "Prediction", "TrainedModel", "available", "create", "load_model",
        "register",
    ],
    "detectors.base": ["Detector", "DetectorConfig", "Prediction", "ProgressCallback", "score_summary"],
    "detectors.inference": ["InferenceModule"],
    "detectors.registry": ["available", "create", "register", "detector_class", "validate_config"],
    "detectors.errors": [
        "DetectorError",
        "UnknownDetector",
        "DetectorConfigError",
        "BackboneError",
        "ImageSetError",
        "ModelDirectoryError",
    ],
    "detectors.backbones": [
        "FeatureExtractor",
        "Classifier",
        "create_feature_extractor",
        "create_classifier",
        "OFFLINE_BACKBONE",
        "PRETRAINED_CHOICES",
    ],
    "detectors.device": ["resolve_device", "autocast_context", "autocast_dtype", "seed_everything"],
    "detectors.imagesets": [
        "Sample",
        "ImageSet",
        "MVTecImageSet",
        "InMemoryImageSet",
        "split_holdout",
        "check_images",
        "to_image_tensor",
        "read_image_file",
        "resize_image",
        "resize_mask",
    ],
    "detectors.metrics": ["image_auroc", "pixel_auroc", "aupro", "pro_curve", "f1_max", "pg0", "evaluate", "just_below"],
    "detectors.thresholds": ["choose_threshold", "ThresholdDecision", "POLICIES"],
    "detectors.model_io": ["atomic_write", "check_state_shapes", "check_loose_tensors", "reject_unknown_tensors"],
    "detectors.model_dir": [
        "save_detector", "load_detector", "read_model_config", "FORMAT_VERSION", "write_model_dir", "read_input_spec",
        "read_threshold", "write_part_threshold", "read_part_threshold", "read_provenance", "TrainedModel",
        "load_model", "file_sha256", "software_versions",
    ],
    "detectors.input_prep": [
        "InputSpec", "RESIZE", "resize_for_model", "working_image", "working_mask", "training_tiles", "fit_inputs",
        "score_working", "score_capture", "to_capture_size", "prepare_imageset", "prepared_mvtec_split",
    ],
    "detectors.tiling": ["predict_tiled", "tile_starts"],
    "detectors.synthetic": ["textured_images", "add_defect", "synthetic_imageset"],
}

ERROR_TREE = {
    "UnknownDetector": "DetectorError",
    "DetectorConfigError": "DetectorError",
    "BackboneError": "DetectorError",
    "ImageSetError": "DetectorError",
    "ModelDirectoryError": "DetectorError",
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_public_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in PUBLIC_API[module_name] if not hasattr(module, name)]
    assert not missing, f"{module_name} lost public names: {missing}"


def test_package_all_lists_the_top_level_names() -> None:
    import detectors

    assert set(PUBLIC_API["detectors"]) <= set(detectors.__all__)


def test_error_hierarchy() -> None:
    from detectors import errors

    for child, parent in ERROR_TREE.items():
        assert issubclass(getattr(errors, child), getattr(errors, parent)), child
    assert issubclass(errors.DetectorError, Exception)


@pytest.mark.parametrize(
    "module_name, function, parameters",
    [
        ("detectors.backbones", "create_feature_extractor", ["name", "layers", "pretrained"]),
        ("detectors.device", "resolve_device", ["spec"]),
        ("detectors.metrics", "aupro", ["maps", "masks", "fpr_limit"]),
        ("detectors.metrics", "evaluate", ["scores", "labels", "maps", "masks"]),
        ("detectors.thresholds", "choose_threshold", ["policy", "good_scores", "defect_scores", "quantile", "manual"]),
        ("detectors.tiling", "predict_tiled", ["detector", "images", "tile_size", "overlap", "batch_size"]),
        ("detectors.imagesets", "split_holdout", ["imageset", "fraction", "seed"]),
        ("detectors.model_dir", "save_detector", ["detector", "directory"]),
        ("detectors.model_dir", "load_detector", ["directory"]),
        ("detectors.model_dir", "write_model_dir", ["out", "detector", "spec", "threshold", "provenance"]),
        ("detectors.model_dir", "write_part_threshold", ["directory", "decision"]),
        ("detectors.model_dir", "read_part_threshold", ["directory"]),
        ("detectors.model_dir", "load_model", ["directory", "device", "threshold_override"]),
        ("detectors.input_prep", "working_image", ["pixels", "spec", "image_size"]),
        ("detectors.input_prep", "score_capture", ["detector", "pixels", "spec"]),
        ("detectors.image_ops", "check_batch", ["images", "image_size", "method", "where"]),
        ("detectors.train_images", "TrainImages", ["data", "method", "role", "image_size"]),
        ("detectors.train_images", "StackedTrainImages", ["data", "method", "image_size", "role"]),
    ],
)
def test_binding_signatures(module_name: str, function: str, parameters: list[str]) -> None:
    signature = inspect.signature(getattr(importlib.import_module(module_name), function))
    names = list(signature.parameters)
    assert names[: len(parameters)] == parameters, f"{module_name}.{function}{signature}"


def test_public_functions_are_documented() -> None:
    for module_name, names in PUBLIC_API.items():
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
