"""The detector registry: ``create(name, **config)`` and ``available()`` (after timm's create_model)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from pydantic import ValidationError

from detectors.base import Detector, DetectorConfig
from detectors.errors import DetectorConfigError, UnknownDetector

_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register(cls: D) -> D:
    """Class decorator: make a :class:`Detector` subclass available under ``cls.name``.

    Refuses (``TypeError`` naming the class and what is missing) a class that is not a Detector, has no
    ``name``, whose ``config_class`` is not a :class:`DetectorConfig`, that declares no ``smoke_config`` (a
    dict valid for its config class) or leaves an abstract method unimplemented.
    """
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"{getattr(cls, '__name__', cls)!r} is not a Detector subclass")
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} has no 'name' to register under")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and issubclass(config_class, DetectorConfig)):
        raise TypeError(f"{cls.__name__}.config_class must be a subclass of detectors.base.DetectorConfig")
    smoke = getattr(cls, "smoke_config", None)
    if not isinstance(smoke, dict):
        raise TypeError(
            f"{cls.__name__} declares no smoke_config: a dict of config overrides that trains it in seconds"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"{cls.__name__} does not implement {missing}")
    try:
        config_class(**smoke)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<config>"
        raise TypeError(f"{cls.__name__}.smoke_config key '{key}': {err['msg']}") from None
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise TypeError(f"a detector named '{name}' is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    """Names of all registered detectors, sorted."""
    _import_builtin_detectors()
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    """The class registered under ``name``; raises :class:`UnknownDetector` naming the choices."""
    _import_builtin_detectors()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDetector(
            f"unknown detector '{name}'; available: {', '.join(sorted(_REGISTRY)) or 'none'}"
        ) from None


def validate_config(name: str, config: dict[str, Any]) -> Any:
    """Validate a config dict for detector ``name`` into its typed config object.

    Raises :class:`DetectorConfigError` whose message names the first bad key and its value.
    """
    cls = detector_class(name)
    try:
        return cls.config_class(**config)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<config>"
        if err["type"] == "extra_forbidden":
            raise DetectorConfigError(
                f"{name}: unknown config key '{key}'; known keys: {', '.join(cls.config_class.model_fields)}"
            ) from None
        raise DetectorConfigError(
            f"{name}: config key '{key}' = {err.get('input')!r}: {err['msg']}"
        ) from None


def create(name: str, **config: Any) -> Detector:
    """Create a detector by name with config overrides (unknown keys and bad values are errors)."""
    cls = detector_class(name)
    return cls(validate_config(name, config))


_builtin_imported = False
_BUILTIN_MODULES: tuple[str, ...] = (
    "detectors.simplenet",
    "detectors.cfa",
    "detectors.glance",
    "detectors.tsdn",
    "detectors.slsg",
    "detectors.patchcore",
    "detectors.efficientad",
)


def _import_builtin_detectors(importer: Callable[[str], Any] | None = None) -> None:
    global _builtin_imported
    if _builtin_imported:
        return
    import importlib

    for module in _BUILTIN_MODULES:
        (importer or importlib.import_module)(module)
    _builtin_imported = True
