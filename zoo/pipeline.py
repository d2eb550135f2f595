"""The predictor every family returns from `create_model`.

`preprocess` (images in, tensors out) -> graph calls through `run_graph` -> `postprocess`
(tensors out, a result type). Graphs are plain tensor-in/tensor-out modules declared by
`graph_specs()`, so export sees each one whole and a runtime backend (ONNX Runtime,
TensorRT, CUDA graphs) can replace any of them without the pipeline noticing.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

GraphRunner = Callable[..., Sequence[torch.Tensor]]


@dataclass
class TensorSpec:
    """One input or output of a graph. `shape` holds ints for fixed sizes and names for
    dynamic ones ("batch", "height", ...); `value_range` bounds random example values.
    `valid_range` (low, high), inclusive, is a true bound: values outside it are undefined for
    the graph (an integer input that indexes a table: a timestep, a token id, a class label),
    so the server refuses them with a 400 instead of failing or answering garbage."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    valid_range: tuple[float, float] | None = None

    def concrete_shape(self, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else _dim_size(d, dims) for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


def _dim_size(name: str, dims: dict[str, int]) -> int:
    """A named size, or one derived from a named size: "height/8" (an encoder's output) or
    "latent_height*8" (a decoder's); KeyError when the name is unknown."""
    if name in dims:
        return dims[name]
    for op in ("*", "/"):
        base, found, factor = name.partition(op)
        if found and base in dims:
            return dims[base] * int(factor) if op == "*" else dims[base] // int(factor)
    raise KeyError(name)


@dataclass
class GraphSpec:
    """An exportable graph: a module with tensor inputs and outputs.

    `dims` gives each dynamic dimension's (min, opt, max): example inputs use `opt`
    (export uses a batch of at least 2), parity checks use other sizes inside the range,
    and TensorRT optimisation profiles use all three. A size missing from `dims` is fixed;
    `note` says why (e.g. EfficientAD's autoencoder ties the graph to one H x W).
    `multiple_of` maps a dynamic dimension to the number its size must be a multiple of
    (a U-Net's stride-2 levels); the server checks it and publishes it in the v2 metadata."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"batch": (1, 2, 16)})
    note: str = ""
    multiple_of: dict[str, int] = field(default_factory=dict)
    # Share of output elements the fp16 export may put outside its 1e-2 tolerance: 0 unless the
    # graph thresholds its own intermediate values (e.g. OneFormer's masked attention), where
    # fp16 rounding flips a few decisions; `note` says why, and the task metric must still pass.
    fp16_mismatch_fraction: float = 0.0

    def input_constraints(self, tensor: TensorSpec) -> dict[str, Any]:
        """What an input's shape and dtype do not say: `multiple_of` (one number per axis,
        1 where any size goes) and `valid_range` ([low, high], inclusive); {} when neither."""
        out: dict[str, Any] = {}
        multiples = [self.multiple_of.get(d, 1) if isinstance(d, str) else 1 for d in tensor.shape]
        if any(m != 1 for m in multiples):
            out["multiple_of"] = multiples
        if tensor.valid_range is not None:
            out["valid_range"] = [int(v) if float(v).is_integer() else float(v) for v in tensor.valid_range]
        return out

    def config_parameters(self, skip_axes: int = 0) -> dict[str, str]:
        """The constraints as Triton model-config parameters (string values, JSON by input name):
        `zoo_multiple_of` aligned with each input's config `dims` (its first `skip_axes` axes,
        the batch, left out) and `zoo_valid_range`. Triton's config has no per-input field for them."""
        import json

        out = {}
        for key in ("multiple_of", "valid_range"):
            found = {t.name: self.input_constraints(t).get(key) for t in self.inputs}
            found = {n: (v[skip_axes:] if key == "multiple_of" else v) for n, v in found.items() if v is not None}
            if found:
                out[f"zoo_{key}"] = json.dumps(found)
        return out

    def example_inputs(self, dims: dict[str, int] | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs inside each tensor's value range, at `opt` sizes unless overridden."""
        sizes = {k: v[1] for k, v in self.dims.items()}
        sizes.update(dims or {})
        gen = torch.Generator().manual_seed(seed)
        out = []
        for spec in self.inputs:
            shape = spec.concrete_shape(sizes)
            low, high = spec.value_range
            if spec.dtype.startswith("int"):
                out.append(torch.randint(int(low), int(high) + 1, shape, generator=gen, dtype=getattr(torch, spec.dtype)))
            else:
                out.append(torch.rand(shape, generator=gen) * (high - low) + low)
        return tuple(out)


class Pipeline(abc.ABC):
    """Base of every family's predictor. Subclasses implement `graph_specs` and `_predict`."""

    card: Any = None  # zoo.registry.ModelCard, set by the registry
    variant: str = ""

    def __init__(self, model: nn.Module, config: Any):
        self.model = model
        self.config = config
        self.backend = "torch"
        self.device = torch.device("cpu")
        self._runners: dict[str, GraphRunner] = {}

    # -- graphs -------------------------------------------------------------------------
    @abc.abstractmethod
    def graph_specs(self) -> list[GraphSpec]:
        """The exportable graphs of this pipeline, in the order they run."""

    def graph(self, name: str) -> GraphSpec:
        for spec in self.graph_specs():
            if spec.name == name:
                return spec
        raise KeyError(f"{self.card.name if self.card else type(self).__name__} has no graph {name!r}")

    def set_runner(self, name: str, runner: GraphRunner | None) -> None:
        """Replace how graph `name` runs (a backend's session); None restores PyTorch."""
        self.graph(name)
        if runner is None:
            self._runners.pop(name, None)
        else:
            self._runners[name] = runner

    def run_graph(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run one graph on the active backend; always returns a tuple of CPU-or-device tensors."""
        runner = self._runners.get(name)
        if runner is not None:
            return tuple(runner(*inputs))
        module = self._graph_module(name)
        with torch.inference_mode():
            out = module(*(x.to(self.device) for x in inputs))
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def _graph_module(self, name: str) -> nn.Module:
        cache = self.__dict__.setdefault("_graph_modules", {})
        if name not in cache:
            cache[name] = self.graph(name).module
        return cache[name]

    # -- prediction ---------------------------------------------------------------------
    def predict(self, inputs: Any = None, **options: Any) -> Any:
        """One input -> one result; a list of inputs -> a list of results (run as a batch).
        An input is what the card's typed inputs say: the value of a one-input model, a dict
        name -> value for several, None for a generator (`predict(seed=3)`; `[None] * 4` for four)."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        parsed = self.card.parse_options(options) if self.card is not None else options
        results = self._predict(items, **parsed)
        return results[0] if single else results

    @abc.abstractmethod
    def _predict(self, items: list[Any], **options: Any) -> list[Any]:
        """Preprocess a batch of raw inputs, run the graphs, postprocess into result types."""

    # -- modules and weights ------------------------------------------------------------
    def to(self, device: str | torch.device) -> Pipeline:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def eval(self) -> Pipeline:
        self.model.eval()
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from zoo.weights import load_into

        load_into(self.model, state)

    def parameter_counts(self) -> dict[str, int]:
        counts = {"total": sum(p.numel() for p in self.model.parameters())}
        for child_name, child in self.model.named_children():
            counts[child_name] = sum(p.numel() for p in child.parameters())
        return counts
