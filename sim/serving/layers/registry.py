"""Finding layers: the built-ins by the name they have in ``stack.layers``, ``module:Class``
targets and the ``recloop.layers`` entry-point group for installed packages, as for policies and
user models (see :mod:`sim.scenario.plugins`). Adding a layer of your own never means editing this
file.

Like :mod:`sim.serving.runner`, this is composition: it is the one module of
:mod:`sim.serving.layers` that imports :mod:`policies`, where the bandit and online-learning layers
live beside the policy adapters that serve them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.bandit import BanditKind
from policies.online import OnlineModel
from sim.errors import USER_CODE_ERRORS, ScenarioError, said
from sim.scenario.plugins import Registry, validate_params
from sim.scenario.spec import CustomLayer, Layer
from sim.serving.layers.base import LayerContext
from sim.serving.layers.nearline_embeddings import PolicyRefresh
from sim.serving.layers.profile_memory import ProfileMemoryKind
from sim.serving.layers.realtime_features import FeatureStore
from sim.serving.layers.retrain import PolicyFit
from sim.serving.layers.session_context import SessionContextStore

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "register",
    "resolve",
    "available",
    "layer_class",
    "described_by",
    "make_layer",
]

ENTRY_POINT_GROUP = "recloop.layers"
BUILTIN: dict[str, type] = {}


def register(cls: Any) -> Any:
    """Make ``cls`` available under ``cls.name`` (usable as a class decorator)."""
    BUILTIN[cls.name] = cls
    return cls


for _cls in (
    FeatureStore,
    PolicyRefresh,
    PolicyFit,
    SessionContextStore,
    ProfileMemoryKind,
    BanditKind,
    OnlineModel,
):
    register(_cls)


def _layer_class(found: Any, name: str, path: str) -> type:
    """``found`` if it is a class with a ``create`` method, else a one-line error."""
    if not isinstance(found, type) or not callable(getattr(found, "create", None)):
        what = f"class {found.__name__}" if isinstance(found, type) else type(found).__name__
        raise ScenarioError(
            f"{path}: {name!r} is not a layer ({what} without a create method); a layer is a "
            "class with create(params, context), e.g. a subclass of sim.serving.layers.BaseLayer"
        )
    return found


REGISTRY = Registry("layer", ENTRY_POINT_GROUP, BUILTIN, _layer_class)


def available() -> dict[str, str]:
    """Every layer name that resolves, with where it comes from."""
    return REGISTRY.available()


def resolve(name: str, path: str = "stack.layers", near: str | Path | None = None) -> type:
    """The layer class for a registered name or a ``module:Class`` target (its module looked
    for in ``near``, the scenario file's folder, then the current directory, then
    ``sys.path``)."""
    return REGISTRY.resolve(name, path, near)


def described_by(cls: type) -> type:
    """What describes a layer to a person: a built-in's scenario section (its ``Params``, a
    :class:`sim.scenario.spec.Layer`), else the class itself."""
    params = getattr(cls, "Params", None)
    return params if isinstance(params, type) and issubclass(params, Layer) else cls


def layer_class(name: str, spec: Layer, near: str | Path | None = None) -> tuple[type, Any]:
    """The class of layer ``name`` in ``stack.layers`` and its validated parameters: a
    built-in's are its spec; a plug-in's (``name: module:Class``) are its ``params``, validated
    by its ``Params``."""
    if not isinstance(spec, CustomLayer):
        return BUILTIN[name], spec
    path = f"stack.layers.{name}"
    cls = resolve(spec.name, f"{path}.name", near)
    if cls in BUILTIN.values():
        raise ScenarioError(
            f"{path}.name: {spec.name!r} is a built-in layer: configure it as "
            f"stack.layers.{cls.name} (its parameters beside its trigger)"  # type: ignore[attr-defined]
        )
    params = validate_params(cls, spec.params, f"{path}.params", f"layer {spec.name!r}")
    _refuse_canary(name, spec, getattr(cls, "incremental", False))
    return cls, params


def _refuse_canary(name: str, spec: Layer, incremental: Any) -> None:
    """A layer whose state is updated in place cannot serve two versions at once (a canary)."""
    if incremental is True and spec.canary is not None:
        raise ScenarioError(
            f"stack.layers.{name}.rollout: the layer's state is updated in place: rollout must "
            "be immediate"
        )


def make_layer(cls: type, params: Any, context: LayerContext) -> Any:
    """The kind (the math) of one layer for one run, from its validated parameters."""
    name = context.name
    try:
        kind = cls.create(params, context)  # type: ignore[attr-defined]
    except ScenarioError:
        raise
    except USER_CODE_ERRORS as error:
        raise ScenarioError(f"stack.layers.{name}: creating it failed: {said(error)}") from None
    if not isinstance(getattr(kind, "incremental", None), bool):
        raise ScenarioError(
            f"stack.layers.{name}: its kind has no incremental attribute (True: absorb events "
            "in place; False: compute a new state per update)"
        )
    _refuse_canary(name, context.spec, kind.incremental)
    return kind
