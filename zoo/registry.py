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
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from zoo.pipeline import Pipeline

log = logging.getLogger(__name__)


def family_modules() -> list[str]:
    """Families imported on first use of the registry: every package under `zoo/models/`
    (found by discovery, so adding a family never means editing this file) and any module
    another distribution declares under the `zoo.models` entry point group."""
    import pkgutil
    from importlib.metadata import entry_points

    import zoo.models

    found = [f"zoo.models.{info.name}" for info in pkgutil.iter_modules(zoo.models.__path__) if info.ispkg]
    found += [ep.value for ep in entry_points(group="zoo.models")]
    return sorted(dict.fromkeys(found))


OPTION_KINDS = ("int", "float", "bool", "str", "label")
INPUT_KINDS = ("image", "mask", "text", "boxes", "polygons")
IMAGE_KINDS = ("image", "mask")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_bool(value: Any, where: str) -> bool:
    """true/false/1/0/yes/no/on/off (any case), a bool, or the integers 0 and 1; nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, (str, int, float)) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where} expects a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def _parse_int(value: Any, field: str) -> int:
    """An int, an integral float (3.0) or a decimal string ("3"); bools and fractions refused."""
    if isinstance(value, bool):
        raise ValueError(f"{field} expects int, got {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"{field} expects int, got {value!r}")
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{field} expects int, got {value!r}") from None


def _parse_float(value: Any, field: str) -> float:
    """A finite number (NaN and infinities refused: they slip past every range check)."""
    if isinstance(value, bool):
        raise ValueError(f"{field} expects float, got {value!r}")
    try:
        parsed = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} expects float, got {value!r}") from None
    if not math.isfinite(parsed):
        raise ValueError(f"{field} expects a finite float, got {value!r}")
    return parsed


def _check_range(parsed: Any, minimum: float | None, maximum: float | None, field: str, what: str = "") -> None:
    if minimum is not None and parsed < minimum:
        raise ValueError(f"{field} must be {what}>= {minimum}, got {parsed}")
    if maximum is not None and parsed > maximum:
        raise ValueError(f"{field} must be {what}<= {maximum}, got {parsed}")


@dataclass
class OptionSpec:
    """A scalar `predict` option a user can set (CLI `--opt`, REST field or JSON key, v2
    input or parameter, demo widget).

    kind: "int" | "float" | "bool" | "str" | "label". A "label" is a class: `choices` holds
    the class names, and a name or an index is accepted; it parses to the int index.
    Parsing is strict: NaN/inf floats, fractional ints and non-boolean words for bools are
    refused with a ValueError that names the option. None means "unset": the default."""

    name: str
    kind: str
    default: Any
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"option {self.name!r}: kind must be one of {', '.join(OPTION_KINDS)}, got {self.kind!r}")
        if self.kind == "label" and not self.choices:
            raise ValueError(f"option {self.name!r}: a label option needs its class names as choices")
        if self.choices is not None:
            self.choices = tuple(self.choices)

    @property
    def where(self) -> str:
        return f"option {self.name!r}"

    def parse(self, value: Any) -> Any:
        """Coerce a user value (often a string) to this option's kind, checking its range."""
        if isinstance(value, np.generic):  # numpy scalars (v2 tensors) as plain Python values
            value = value.item()
        if value is None:  # unset: the default (a label's default may be a class name)
            return self._parse_label(self.default) if self.kind == "label" and self.default is not None else self.default
        where = self.where
        if self.kind == "bool":
            return parse_bool(value, where)
        if self.kind == "label":
            return self._parse_label(value)
        if self.kind == "int":
            parsed: Any = _parse_int(value, where)
        elif self.kind == "float":
            parsed = _parse_float(value, where)
        else:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(f"{where} expects a string, got {value!r}")
            parsed = str(value)
        _check_range(parsed, self.minimum, self.maximum, where)
        if self.choices is not None and parsed not in self.choices:
            raise ValueError(f"{where} must be one of {list(self.choices)}, got {parsed!r}")
        return parsed

    def _parse_label(self, value: Any) -> int:
        assert self.choices is not None
        if isinstance(value, str) and value.strip() in self.choices:
            return self.choices.index(value.strip())
        try:
            index = _parse_int(value, self.where)
        except ValueError:
            raise ValueError(f"{self.where} expects a class name ({', '.join(self.choices)}) or an index 0..{len(self.choices) - 1}, got {value!r}") from None
        if not 0 <= index < len(self.choices):
            raise ValueError(f"{self.where} must be a class index 0..{len(self.choices) - 1} or a name, got {index}")
        return index

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default": self.default, "help": self.help,
                "minimum": self.minimum, "maximum": self.maximum, "choices": list(self.choices) if self.choices is not None else None}


@dataclass
class InputSpec:
    """A data input a `predict` call takes (CLI positional or `--input`, REST field or JSON
    key, v2 input tensor, demo widget).

    kind: "image" | "mask" (an image, decoded under the caller's limits) | "text" |
    "boxes" (JSON [[x0, y0, x1, y1], ...] in pixels, parsed to float32 (N, 4)) | "polygons"
    (JSON [[[x, y], ...], ...], parsed to a list of float32 (K, 2) arrays, K >= 3).
    minimum/maximum bound a text's length in characters, or the number of boxes/polygons;
    `choices` lists the texts allowed. A missing input takes `default` when it is not
    `required`; a required one missing is an error that names it."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = True

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input {self.name!r}: kind must be one of {', '.join(INPUT_KINDS)}, got {self.kind!r}")
        if self.choices is not None:
            self.choices = tuple(self.choices)

    @property
    def where(self) -> str:
        return f"input {self.name!r}"

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS

    def parse(self, value: Any) -> Any:
        """A user value -> what the pipeline takes. Images pass through (each surface decodes
        them under its own limits); text, boxes and polygons are checked here."""
        if value is None:
            if self.required:
                raise ValueError(f"{self.where} ({self.kind}) is required")
            return self.default
        if self.is_image:
            return value
        if self.kind == "text":
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{self.where} expects UTF-8 text") from None
            if not isinstance(value, str):
                raise ValueError(f"{self.where} expects text, got {type(value).__name__}")
            _check_range(len(value), self.minimum, self.maximum, self.where, "a text of length ")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{self.where} must be one of {list(self.choices)}, got {value!r}")
            return value
        items = _json_value(value, self.where)
        if self.kind == "boxes":
            parsed: Any = _points(items, self.where, "boxes [[x0, y0, x1, y1], ...]", (-1, 4))
            if len(parsed) and ((parsed[:, 2] < parsed[:, 0]) | (parsed[:, 3] < parsed[:, 1])).any():
                raise ValueError(f"{self.where}: each box must have x1 >= x0 and y1 >= y0")
            count = len(parsed)
        else:
            if not isinstance(items, (list, tuple)):
                raise ValueError(f"{self.where} expects polygons [[[x, y], ...], ...], got {type(items).__name__}")
            parsed = [_points(p, self.where, "polygons [[[x, y], ...], ...]", (-1, 2)) for p in items]
            if any(len(p) < 3 for p in parsed):
                raise ValueError(f"{self.where}: each polygon needs at least 3 points")
            count = len(parsed)
        _check_range(count, self.minimum, self.maximum, self.where, "a number of items ")
        return parsed

    def to_json(self) -> dict[str, Any]:
        default = self.default
        if isinstance(default, np.ndarray):
            default = default.tolist()
        return {"name": self.name, "kind": self.kind, "default": default, "help": self.help, "minimum": self.minimum,
                "maximum": self.maximum, "choices": list(self.choices) if self.choices is not None else None, "required": self.required}


def _json_value(value: Any, field: str) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"{field} is not valid JSON: {value[:60]!r}") from None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _points(value: Any, field: str, what: str, shape: tuple[int, int]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} expects {what}") from None
    if array.size == 0:
        array = array.reshape(0, shape[1])
    if array.ndim != 2 or array.shape[1] != shape[1]:
        raise ValueError(f"{field} expects {what}, got an array of shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{field}: coordinates must be finite numbers")
    return array.astype(np.float32)


DEFAULT_INPUTS: tuple[InputSpec, ...] = (InputSpec("image", "image", help="the input image"),)
# Request fields the surfaces use themselves (REST overlay/format): no input or option may take them.
RESERVED_FIELDS = ("overlay", "format")


@dataclass
class VariantSpec:
    """One size of a model: its config, and what the paper (or official code) says it weighs."""

    config: Any  # the family's config dataclass
    description: str = ""
    paper_params: dict[str, int] | None = None  # expected counts, asserted in tests
    demo_weights: str | None = None  # file name under the family's `weights/` folder
    # Where the paper's table counts parameters its own way (so its number differs from ours):
    # {"total": N, "how": "one line on how N is counted"}; `zoo info` shows it beside our counts.
    paper_table_params: dict[str, Any] | None = None


@dataclass
class TrainStage:
    """One way to train a family (`zoo train NAME --stage S`)."""

    build_task: Callable[..., Any]  # (model, data, config, seed, workdir) -> zoo.trainable.TrainTask
    config_cls: type  # a zoo.trainable.TrainConfig subclass with the paper's defaults
    description: str = ""
    variant_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-variant overrides
    train_graph: str | None = None  # the graph this stage trains: `zoo info` estimates its training memory

    def batch_size(self, variant: str) -> int:
        """The stage's default batch for a variant (its variant defaults over the paper's)."""
        return int(self.variant_defaults.get(variant, {}).get("batch_size", self.config_cls().batch_size))


def training_memory_estimate(name: str, variant: str) -> dict[str, Any]:
    """Per training stage that names its graph: bytes for weights, gradients, Adam state, EMA and
    saved activations at the stage's default batch, with and without gradient checkpointing
    (zoo.memory; computed on the meta device, so paper sizes cost nothing)."""
    from zoo.memory import training_memory

    card = get_card(name)
    out: dict[str, Any] = {}
    for stage_name, stage in card.train_stages.items():
        if stage.train_graph is None:
            continue
        with torch.device("meta"):
            pipeline = build_pipeline(name, variant)
        batch = stage.batch_size(variant)
        out[stage_name] = {"graph": stage.train_graph, "batch_size": batch,
                           "bytes": training_memory(pipeline, stage.train_graph, batch),
                           "bytes_checkpointing": training_memory(pipeline, stage.train_graph, batch, checkpointing=True)}
    return out


@dataclass
class Metric:
    """A measured number, always with the command that measured it."""

    name: str
    value: float
    variant: str
    data: str
    command: str
    date: str


def sidecar_metrics(sidecar: Path, variant: str, data: str, keys: Sequence[str] | Callable[[str], bool],
                    command: str | None = None) -> tuple[Metric, ...]:
    """A card's measured metrics from its bundled weights' JSON sidecar (written by `zoo train`): the
    metrics named in `keys` (or those `keys(name)` accepts), rounded to 4 digits, with the sidecar's
    command (or `command`) and date (or the file's); () while the weights are not bundled."""
    import time

    if not sidecar.is_file():
        return ()
    meta = json.loads(sidecar.read_text())
    date = meta.get("date") or time.strftime("%Y-%m-%d", time.gmtime(sidecar.stat().st_mtime))
    wanted = keys if callable(keys) else (lambda name: name in keys)
    return tuple(Metric(key, round(float(value), 4), variant, data, command or meta["command"], date)
                 for key, value in sorted(meta.get("metrics", {}).items()) if wanted(key))


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
    inputs: tuple[InputSpec, ...] = DEFAULT_INPUTS  # () for a generator
    options: tuple[OptionSpec, ...] = ()
    graphs: tuple[str, ...] = ()
    train_stages: dict[str, TrainStage] = field(default_factory=dict)
    metrics: tuple[Metric, ...] = ()
    examples: tuple[str, ...] = ()  # bundled example inputs, e.g. "skimage:brick"
    notes: str = ""
    default_variant: str = "micro"
    family_module: str = ""  # python module of the family (set at registration)
    converter: Callable[[dict, Any], dict] | None = None  # (foreign state dict, config) -> our state dict

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.options = tuple(self.options)
        for spec in self.inputs:
            if not isinstance(spec, InputSpec):
                raise TypeError(f"model {self.name!r}: inputs must be InputSpec(name, kind, ...), got {spec!r}")
        names = [spec.name for spec in (*self.inputs, *self.options)]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(RESERVED_FIELDS)))
        if clash:
            raise ValueError(f"model {self.name!r}: field name(s) {clash} used twice or reserved ({', '.join(RESERVED_FIELDS)})")

    @property
    def is_generator(self) -> bool:
        """No data inputs: `predict(None, **options)` makes something from options alone."""
        return not self.inputs

    @property
    def image_inputs(self) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.is_image)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        known = ", ".join(f"{i.name} ({i.kind})" for i in self.inputs) or "none"
        raise ValueError(f"model {self.name!r} has no input {name!r}; inputs: {known}")

    def option(self, name: str) -> OptionSpec:
        for spec in self.options:
            if spec.name == name:
                return spec
        known = ", ".join(o.name for o in self.options) or "none"
        inputs = ", ".join(i.name for i in self.inputs) or "none"
        raise ValueError(f"model {self.name!r} has no option {name!r}; options: {known}; inputs: {inputs}")

    def field_spec(self, name: str) -> InputSpec | OptionSpec:
        """An input or an option by name (an error naming both lists otherwise)."""
        for spec in (*self.inputs, *self.options):
            if spec.name == name:
                return spec
        return self.option(name)  # raises, naming the options and inputs

    def parse_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names are an error."""
        parsed = {spec.name: spec.parse(None) for spec in self.options}
        for key, value in raw.items():
            parsed[key] = self.option(key).parse(value)
        return parsed

    def parse_inputs(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Every input's value checked (images pass through undecoded); a missing required
        input or an unknown name is a ValueError naming it."""
        for key in raw:
            self.input(key)
        return {spec.name: spec.parse(raw.get(spec.name)) for spec in self.inputs}

    def pipeline_input(self, values: dict[str, Any]) -> Any:
        """What `predict` takes for one item: None for a generator, the value itself for a
        one-input model, a dict name -> value for several."""
        if not self.inputs:
            return None
        if len(self.inputs) == 1:
            return values[self.inputs[0].name]
        return {spec.name: values[spec.name] for spec in self.inputs}

    def example_text(self, example: str, spec: InputSpec) -> str | None:
        """The text an image example comes with (e.g. a referring expression): `STEM.NAME.txt` or
        `STEM.txt` beside the example file; None when there is none."""
        path = Path(example)
        for candidate in (path.with_suffix(f".{spec.name}.txt"), path.with_suffix(".txt")):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8").strip()
        return None

    def example_input(self, example: str) -> Any:
        """What `predict` takes for a bundled example: the image itself, or for several inputs a
        dict of the image and the texts that come with it (`example_text`)."""
        if len(self.inputs) <= 1:
            return example
        first = self.image_inputs[0] if self.image_inputs else None  # the example fills the first image input only (a mask is not the photo)
        values = {spec.name: example if spec is first else None if spec.is_image else self.example_text(example, spec) for spec in self.inputs}
        return {name: value for name, value in values.items() if value is not None}

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
            "inputs": [i.to_json() for i in self.inputs],
            "options": [o.to_json() for o in self.options],
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
                memory = training_memory_estimate(self.name, vname)
                if memory:
                    entry["training_memory"] = memory
            if spec.paper_params:
                entry["paper_params"] = spec.paper_params
            if spec.paper_table_params:
                entry["paper_table_params"] = dict(spec.paper_table_params)
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


_REGISTRY: dict[str, tuple[ModelCard, Callable[[Any], Pipeline]]] = {}
_FAMILY_ERRORS: dict[str, str] = {}
_LOADED = False


def register_model(card: ModelCard) -> Callable[[Callable[[Any], Pipeline]], Callable[[Any], Pipeline]]:
    """Decorator: register `factory(config) -> Pipeline` under `card.name`."""

    def decorator(factory: Callable[[Any], Pipeline]) -> Callable[[Any], Pipeline]:
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
    for module in family_modules():
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


def _lookup(name: str) -> tuple[ModelCard, Callable[[Any], Pipeline]]:
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


def build_pipeline(name: str, variant: str | None = None, *, config: Any = None) -> Pipeline:
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
) -> Pipeline:
    """A ready predictor.

    weights: None loads the variant's bundled demo weights; a variant without them is refused
    (`MissingWeightsError`), never served with random weights in silence. "random" asks for
    random initialisation explicitly (as `pretrained=False` does in timm and torchvision); a
    path loads our safetensors, an official checkpoint (through the family converter), or a
    library folder; a bare name is looked up in the local store ($ZOO_HOME/weights/NAME/).
    backend: "torch", or a runtime registered under the `zoo.backends` entry point group
    (e.g. "onnxruntime", which takes export_dir=...). On CUDA the torch backend runs fp16
    with CUDA graphs where the `torch-cuda` runtime is installed (`pipeline.backend` then says
    "torch-cuda"); `fast=False` keeps eager fp32 ("torch"). Options no backend takes are refused.
    """
    from zoo import weights as weights_mod

    card = get_card(name)
    variant = variant or card.default_variant
    if variant not in card.variants:
        raise KeyError(f"model {name!r} has no variant {variant!r}; variants: {', '.join(card.variants)}")
    demo = card.demo_weights_path(variant) if weights is None else None
    if weights is None and demo is None:
        bundled = [v for v in card.variants if card.demo_weights_path(v) is not None]
        raise MissingWeightsError(
            f"{name}/{variant} has no bundled weights: pass weights=PATH (our safetensors, an official checkpoint, a "
            f"library folder, or a name in the local store), or ask for random initialisation explicitly with "
            f"weights='random' (command line: --weights PATH or --random-weights). "
            f"Variants with bundled weights: {', '.join(bundled) or 'none'}"
        )
    pipeline = build_pipeline(name, variant)
    if demo is not None:
        weights_mod.load_weights(pipeline, demo)
    elif str(weights) != "random":
        weights_mod.load_weights(pipeline, weights)
    fast = backend_options.pop("fast", True)
    cuda_fast_path = backend == "torch" and str(device).startswith("cuda") and fast and "torch-cuda" in available_backends()
    if backend == "torch" and backend_options and not cuda_fast_path:
        raise TypeError(f"backend 'torch' takes no options {sorted(backend_options)} (export_dir is for backend='onnxruntime')")
    pipeline.to(device)
    pipeline.eval()
    if cuda_fast_path:
        # On a GPU the torch backend runs fp16 with CUDA graphs (export/cuda.py) unless told not
        # to; the pipeline says so (backend "torch-cuda"), so /v2 metadata and logs name what runs.
        attach_backend(pipeline, "torch-cuda", device=device, **backend_options)
    elif backend != "torch":
        attach_backend(pipeline, backend, device=device, **backend_options)
    return pipeline


class MissingWeightsError(ValueError):
    """A variant without bundled weights was asked for without weights= (a path or "random")."""


def available_backends() -> dict[str, Any]:
    """Runtime backends plugged in through the `zoo.backends` entry point group."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="zoo.backends")}


def attach_backend(pipeline: Pipeline, backend: str, **options: Any) -> None:
    backends = available_backends()
    if backend not in backends:
        known = ", ".join(["torch", *sorted(backends)])
        raise ValueError(f"unknown backend {backend!r}; available: {known}")
    attach = backends[backend].load()
    attach(pipeline, **options)
    pipeline.backend = backend
