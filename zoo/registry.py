"""The model registry: one card per paper, one factory per card.

A family registers itself with `@register_model(card)` on a factory `config -> Pipeline`.
Everything user-facing (CLI, server, demos, export, benchmarks) is built from the cards,
so adding a model never means editing those layers.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:
    from zoo.pipeline import Pipeline

log = logging.getLogger(__name__)

# Families imported on first use of the registry. A new family adds its module here.
FAMILY_MODULES: tuple[str, ...] = ("zoo.models.efficientad", "zoo.models.docdiff", "zoo.models.vidt", "zoo.models.oneformer")


@dataclass
class OptionSpec:
    """A `predict` option a user can set (CLI `--opt`, REST form field, demo widget)."""

    name: str
    kind: str  # "float" | "int" | "bool" | "str"
    default: Any
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def parse(self, value: Any) -> Any:
        """Coerce a user value (often a string) to this option's kind, checking its range."""
        if value is None and self.default is None:
            return None  # an optional option left unset
        try:
            if self.kind == "bool":
                parsed: Any = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            elif self.kind == "int":
                parsed = int(value)
            elif self.kind == "float":
                parsed = float(value)
            else:
                parsed = str(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"option {self.name!r} expects {self.kind}, got {value!r}") from err
        if self.minimum is not None and parsed < self.minimum:
            raise ValueError(f"option {self.name!r} must be >= {self.minimum}, got {parsed}")
        if self.maximum is not None and parsed > self.maximum:
            raise ValueError(f"option {self.name!r} must be <= {self.maximum}, got {parsed}")
        if self.choices is not None and parsed not in self.choices:
            raise ValueError(f"option {self.name!r} must be one of {list(self.choices)}, got {parsed!r}")
        return parsed


@dataclass
class VariantSpec:
    """One size of a model: its config, and what the paper (or official code) says it weighs."""

    config: Any  # the family's config dataclass
    description: str = ""
    paper_params: dict[str, int] | None = None  # expected counts, asserted in tests
    demo_weights: str | None = None  # file name under the family's `weights/` folder


@dataclass
class TrainStage:
    """One way to train a family (`zoo train NAME --stage S`)."""

    build_task: Callable[..., Any]  # (model, data, config, seed, workdir) -> zoo.trainable.TrainTask
    config_cls: type  # a zoo.trainable.TrainConfig subclass with the paper's defaults
    description: str = ""
    variant_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-variant overrides


@dataclass
class Metric:
    """A measured number, always with the command that measured it."""

    name: str
    value: float
    variant: str
    data: str
    command: str
    date: str


@dataclass
class ModelCard:
    name: str
    task: str
    title: str
    year: int
    arxiv: str
    repo: str
    license: str
    summary: str
    variants: dict[str, VariantSpec]
    result_type: str
    inputs: tuple[str, ...] = ("image",)
    options: tuple[OptionSpec, ...] = ()
    graphs: tuple[str, ...] = ()
    train_stages: dict[str, TrainStage] = field(default_factory=dict)
    metrics: tuple[Metric, ...] = ()
    examples: tuple[str, ...] = ()  # bundled example inputs, e.g. "skimage:brick"
    notes: str = ""
    default_variant: str = "micro"
    family_module: str = ""  # python module of the family (set at registration)
    converter: Callable[[dict, Any], dict] | None = None  # (foreign state dict, config) -> our state dict

    def option(self, name: str) -> OptionSpec:
        for spec in self.options:
            if spec.name == name:
                return spec
        known = ", ".join(o.name for o in self.options) or "none"
        raise ValueError(f"model {self.name!r} has no option {name!r}; options: {known}")

    def parse_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names are an error."""
        parsed = {spec.name: spec.default for spec in self.options}
        for key, value in raw.items():
            parsed[key] = self.option(key).parse(value)
        return parsed

    @property
    def weights_dir(self) -> Path:
        module = importlib.import_module(self.family_module)
        return Path(module.__file__).parent / "weights"

    def demo_weights_path(self, variant: str) -> Path | None:
        name = self.variants[variant].demo_weights
        if not name:
            return None
        path = self.weights_dir / name
        return path if path.exists() else None

    def to_json(self, with_params: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "paper": {"title": self.title, "year": self.year, "arxiv": self.arxiv},
            "repo": self.repo,
            "license": self.license,
            "summary": self.summary,
            "result_type": self.result_type,
            "inputs": list(self.inputs),
            "options": [dataclasses.asdict(o) for o in self.options],
            "graphs": list(self.graphs),
            "train_stages": {k: s.description for k, s in self.train_stages.items()},
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
            "examples": list(self.examples),
            "notes": self.notes,
            "default_variant": self.default_variant,
            "variants": {},
        }
        for vname, spec in self.variants.items():
            entry: dict[str, Any] = {
                "description": spec.description,
                "config": _config_dict(spec.config),
                "demo_weights": bool(self.demo_weights_path(vname)),
            }
            if with_params:
                entry["params"] = parameter_counts(self.name, vname)
            if spec.paper_params:
                entry["paper_params"] = spec.paper_params
            out["variants"][vname] = entry
        return out


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return json_safe(dataclasses.asdict(config))
    return dict(config)


def json_safe(value: Any) -> Any:
    """Tuples to lists, recursively, so configs round-trip through JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_REGISTRY: dict[str, tuple[ModelCard, Callable[[Any], "Pipeline"]]] = {}
_FAMILY_ERRORS: dict[str, str] = {}
_LOADED = False


def register_model(card: ModelCard) -> Callable[[Callable[[Any], "Pipeline"]], Callable[[Any], "Pipeline"]]:
    """Decorator: register `factory(config) -> Pipeline` under `card.name`."""

    def decorator(factory: Callable[[Any], "Pipeline"]) -> Callable[[Any], "Pipeline"]:
        if card.name in _REGISTRY:
            raise ValueError(f"model {card.name!r} is already registered")
        if card.default_variant not in card.variants:
            raise ValueError(f"{card.name}: default variant {card.default_variant!r} is not among {list(card.variants)}")
        card.family_module = card.family_module or factory.__module__
        _REGISTRY[card.name] = (card, factory)
        return factory

    return decorator


def _load_families() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in FAMILY_MODULES:
        # One family failing to import (a missing optional package, a bug) must not take
        # the others down: it is logged and reported by family_errors().
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - reported, never swallowed silently
            _FAMILY_ERRORS[module] = f"{type(err).__name__}: {err}"
            log.error("model family %s failed to import: %s", module, _FAMILY_ERRORS[module])


def family_errors() -> dict[str, str]:
    """Families that failed to import, with the error (empty when all loaded)."""
    _load_families()
    return dict(_FAMILY_ERRORS)


def _lookup(name: str) -> tuple[ModelCard, Callable[[Any], "Pipeline"]]:
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def get_card(name: str) -> ModelCard:
    return _lookup(name)[0]


def list_models(task: str | None = None) -> list[ModelCard]:
    _load_families()
    cards = [card for card, _ in _REGISTRY.values()]
    if task is not None:
        cards = [c for c in cards if c.task == task]
    return sorted(cards, key=lambda c: c.name)


def parse_model_list(models: str | Sequence[str] | None) -> list[tuple[str, str | None]]:
    """"a,b:variant" or ["a", "b:variant"] -> [(name, variant or None)]; None -> every registered model."""
    if models is None:
        return [(card.name, None) for card in list_models()]
    items = models.split(",") if isinstance(models, str) else list(models)
    parsed = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, _, variant = item.partition(":")
        parsed.append((name.strip(), variant.strip() or None))
    return parsed


def variant_config(name: str, variant: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """A fresh copy of a variant's config (dataclass), with optional field overrides."""
    card = get_card(name)
    variant = variant or card.default_variant
    if variant not in card.variants:
        raise KeyError(f"model {name!r} has no variant {variant!r}; variants: {', '.join(card.variants)}")
    config = copy.deepcopy(card.variants[variant].config)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return config


def build_pipeline(name: str, variant: str | None = None, *, config: Any = None) -> "Pipeline":
    """The factory call alone: random weights, on the current default device."""
    card, factory = _lookup(name)
    variant = variant or card.default_variant
    pipeline = factory(config if config is not None else variant_config(name, variant))
    pipeline.card = card
    pipeline.variant = variant
    return pipeline


def parameter_counts(name: str, variant: str | None = None) -> dict[str, int]:
    """{"total": N, "<component>": N} computed on the meta device (no memory, no time)."""
    with torch.device("meta"):
        pipeline = build_pipeline(name, variant)
    return pipeline.parameter_counts()


def create_model(
    name: str,
    variant: str | None = None,
    weights: str | Path | None = None,
    backend: str = "torch",
    device: str = "cpu",
    **backend_options: Any,
) -> "Pipeline":
    """A ready predictor.

    weights: None loads the variant's bundled demo weights when it has them (random
    initialisation otherwise, with a warning); "random" forces random initialisation; a path
    loads our safetensors, an official checkpoint (through the family converter), or a
    library folder; a bare name is looked up in the local store ($ZOO_HOME/weights/NAME/).
    backend: "torch", or a runtime registered under the `zoo.backends` entry point group
    (e.g. "onnxruntime", which takes export_dir=...). On CUDA the torch backend runs fp16
    with CUDA graphs where the `torch-cuda` runtime is installed; `fast=False` keeps eager fp32.
    """
    from zoo import weights as weights_mod

    card = get_card(name)
    variant = variant or card.default_variant
    pipeline = build_pipeline(name, variant)
    if weights is None:
        demo = card.demo_weights_path(variant)
        if demo is not None:
            weights_mod.load_weights(pipeline, demo)
        else:
            log.warning("%s/%s has no bundled weights: using random initialisation", name, variant)
    elif str(weights) != "random":
        weights_mod.load_weights(pipeline, weights)
    pipeline.to(device)
    pipeline.eval()
    if backend == "torch" and str(device).startswith("cuda") and "torch-cuda" in available_backends():
        # On a GPU the torch backend runs fp16 with CUDA graphs (export/cuda.py) unless told not to.
        if backend_options.pop("fast", True):
            attach_backend(pipeline, "torch-cuda", device=device, **backend_options)
            pipeline.backend = "torch"
    elif backend != "torch":
        attach_backend(pipeline, backend, device=device, **backend_options)
    return pipeline


def available_backends() -> dict[str, Any]:
    """Runtime backends plugged in through the `zoo.backends` entry point group."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="zoo.backends")}


def attach_backend(pipeline: "Pipeline", backend: str, **options: Any) -> None:
    backends = available_backends()
    if backend not in backends:
        known = ", ".join(["torch", *sorted(backends)])
        raise ValueError(f"unknown backend {backend!r}; available: {known}")
    attach = backends[backend].load()
    attach(pipeline, **options)
    pipeline.backend = backend
