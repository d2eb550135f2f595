"""How much memory training a variant needs, estimated without allocating it.

The model is built on the meta device (no memory, no compute) and one forward pass of the
trained graph runs there with autograd on; every tensor autograd saves for the backward pass is
counted through `torch.autograd.graph.saved_tensors_hooks`. So the activation figure is what
the real forward would keep alive, at any batch size, for paper-size models on a laptop.

    weights + gradients + optimiser state (Adam: 2 copies) + EMA copy + saved activations

It is an estimate: it leaves out the allocator's fragmentation, temporary buffers inside a kernel
and the CUDA context (~0.5 GB), and counts a saved view at its own size (so it errs high where
views share storage). Mixed precision (`amp=True`) halves the activations of matmuls and
convolutions; we halve all of them, which is close for the UNets and transformers here.
Gradient checkpointing saves only block inputs: pass `checkpointing=True` to run the forward
with every submodule that has the switch (`gradient_checkpointing`) turned on.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


def saved_activation_bytes(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes autograd saves for backward during `module(*inputs)` (meta tensors welcome)."""
    total = 0
    seen: set[int] = set()
    keep_alive: list[torch.Tensor] = []  # so ids stay unique while counting

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        owner = tensor._base if tensor._base is not None else tensor
        # parameters (and views of them, e.g. a transposed weight) are counted as weights;
        # a tensor saved by two ops (a ReLU's output, the next layer's input) is counted once
        if not isinstance(owner, torch.nn.Parameter) and id(owner) not in seen:
            seen.add(id(owner))
            keep_alive.append(owner)
            total += owner.numel() * owner.element_size()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*inputs)
    return total


def training_memory(pipeline: Any, graph: str, batch_size: int, *, optimizer_states: int = 2,
                    ema: bool = True, amp: bool = False, checkpointing: bool = False) -> dict[str, int]:
    """Bytes per component for training `graph` of `pipeline` at `batch_size` (see module doc).

    `pipeline` should be built on the meta device (`registry.build_pipeline` under
    `torch.device("meta")`), so nothing is allocated."""
    spec = pipeline.graph(graph)
    module = spec.module
    params = [p for p in module.parameters() if p.requires_grad]
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    dims = {name: (batch_size if name == "batch" else opt) for name, (_, opt, _) in spec.dims.items()}
    with torch.device("meta"):
        inputs = tuple(torch.empty(t.concrete_shape(dims), dtype=getattr(torch, t.dtype)) for t in spec.inputs)
    switches = [m for m in module.modules() if checkpointing and isinstance(getattr(m, "gradient_checkpointing", None), bool)]
    previous = [m.gradient_checkpointing for m in switches]
    for m in switches:
        m.gradient_checkpointing = True
    # diffusers blocks checkpoint through a function their model's enable_gradient_checkpointing() sets
    added = [(m, m.__dict__.get("_gradient_checkpointing_func", "absent")) for m in switches
             if getattr(m, "_gradient_checkpointing_func", None) is None]
    for m, _ in added:
        m._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    was_training = module.training
    module.train()
    try:
        activations = saved_activation_bytes(module, inputs)
    finally:
        module.train(was_training)
        for m, value in zip(switches, previous):
            m.gradient_checkpointing = value
        for m, before in added:
            if before == "absent":
                del m._gradient_checkpointing_func
            else:
                m._gradient_checkpointing_func = before
    if amp:
        activations //= 2
    out = {
        "weights": weight_bytes,
        "gradients": weight_bytes,
        "optimizer": optimizer_states * weight_bytes,
        "ema": weight_bytes if ema else 0,
        "activations": activations,
    }
    out["total"] = sum(out.values())
    return out


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
