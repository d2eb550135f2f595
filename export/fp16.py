"""fp16 ONNX: half-precision graphs with the numerically sensitive ops kept in fp32.

The fp32 export (checked first, as for `--format onnx`) is rewritten by ONNX Runtime's own
float16 converter (`onnxruntime.transformers.float16`, the same code as onnxconverter-common's,
shipped in the onnxruntime wheel we already pin): weights and activations become fp16,
graph inputs and outputs stay fp32 (so pipelines and clients do not change), and every
boundary between precisions is an explicit Cast. Every tensor's type is therefore fixed in
the file, which is what TensorRT's strongly typed networks need (TensorRT 11 drops the FP16
builder flag: precision comes from the ONNX).

Kept in fp32: reductions over many elements (sums and means lose digits and overflow at
65504), exp/log/pow/sqrt/reciprocal (range), normalisation layers (their variance is a mean
of squares) and softmax. The check is looser (1e-2 abs or rel) and adds the task's own
metric on a small batch: fp16 must not change what a user would measure.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.export.common import FP16_TOLERANCE, FP32_TOLERANCE, ParityError, Tolerance, example_dims, write_manifest
from zoo.export.onnx import (
    EXTERNAL_DATA_BYTES,
    base_manifest,
    check_parity,
    export_onnx_graph,
    io_entries,
    prepare,
    raise_if_failed,
    reference_outputs,
)
from zoo.export.runtime import make_session

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

SENSITIVE_OPS = (
    "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "Pow", "Exp", "Log", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax",
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "Sin", "Cos",
)
# AUROC may move by at most this much between fp32 and fp16 ("unchanged" on a small batch).
METRIC_TOLERANCE = 0.01


def convert_to_fp16(src: str | Path, dst: str | Path, keep_fp32_ops: tuple[str, ...] = SENSITIVE_OPS) -> dict[str, Any]:
    """Rewrite an fp32 ONNX file as fp16 (fp32 inputs/outputs, sensitive ops in fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    # The dynamo exporter lists initializers in value_info; stale fp32 entries there make the
    # converter give tensors two types. Types are re-inferred from the nodes instead.
    del model.graph.value_info[:]
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops)),
        node_block_list=float_free_nodes(model.graph),
    )
    topological_sort(converted.graph)
    drop_round_trip_casts(converted.graph)
    del converted.graph.value_info[:]
    dst = Path(dst)
    large = converted.ByteSize() > EXTERNAL_DATA_BYTES  # protobuf files stop at 2 GB
    if large:
        onnx.save(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data")
    else:
        onnx.save(converted, str(dst))
    # Path-based (works past 2 GB); strict: a tensor with two types fails here, not in TensorRT.
    onnx.shape_inference.infer_shapes_path(str(dst), str(dst), check_type=True, strict_mode=True)
    onnx.checker.check_model(str(dst))
    summary = precision_summary(onnx.load(str(dst), load_external_data=False))
    summary["external_data"] = large
    return summary


def float_free_nodes(graph: Any) -> list[str]:
    """Nodes that depend on no float graph input: computed from integer inputs (timesteps,
    positions) and constants alone. They stay in fp32: cheap (no activations), and their
    values (e.g. timestep x frequency, up to ~1000 for diffusion, where fp16 steps by 0.5
    and sin/cos turn to noise) need fp32's precision."""
    import onnx

    tainted = {i.name for i in graph.input if i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)}
    keep = []
    for index, node in enumerate(graph.node):  # exporters write nodes in graph order
        if not node.name:
            node.name = f"node_{index}_{node.op_type}"
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
        else:
            keep.append(node.name)
    return keep


def topological_sort(graph: Any) -> None:
    """Reorder nodes so each comes after the producers of its inputs (the converter appends
    its input Casts at the end; the ONNX checker and TensorRT's parser need graph order)."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered = []
    while nodes:
        ready = [n for n in nodes if all(i in available for i in n.input)]
        if not ready:
            missing = sorted({i for n in nodes for i in n.input if i not in available})[:5]
            raise ValueError(f"graph has a cycle or dangling inputs: {missing}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        nodes = [n for n in nodes if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


def drop_round_trip_casts(graph: Any) -> None:
    """Remove fp32 -> fp16 -> fp32 Cast pairs between two ops kept in fp32.

    The converter casts around each kept op on its own, so `Pow -> ReduceMean` would pass its
    squares through fp16 (and overflow above 65504); the fp32 value is wired through instead."""
    import onnx

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        source = producers.get(node.input[0])
        if source is None or cast_to(source) != onnx.TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        origin = producers.get(source.input[0])
        if origin is None or origin.op_type == "Cast":  # only fp32 ops' outputs are known to be fp32 here
            continue
        rename[node.output[0]] = source.input[0]
        dropped.add(id(node))
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in kept for i in n.input} | outputs
    kept = [n for n in kept if not (cast_to(n) == onnx.TensorProto.FLOAT16 and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)


def precision_summary(model: Any) -> dict[str, Any]:
    """How many nodes compute in fp16 and fp32 (by their first float output), and the Casts between."""
    import onnx

    inferred = model  # types already inferred into value_info by convert_to_fp16
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    counts = {"fp16": 0, "fp32": 0, "casts": 0, "other": 0}
    fp32_ops: set[str] = set()
    for node in inferred.graph.node:
        if node.op_type == "Cast":
            counts["casts"] += 1
            continue
        kinds = [types.get(o) for o in node.output]
        if onnx.TensorProto.FLOAT16 in kinds:
            counts["fp16"] += 1
        elif onnx.TensorProto.FLOAT in kinds:
            counts["fp32"] += 1
            fp32_ops.add(node.op_type)
        else:
            counts["other"] += 1
    untyped = [o for n in inferred.graph.node for o in n.output if o and o not in types]
    return {"nodes": counts, "fp32_ops": sorted(fp32_ops), "untyped_tensors": len(untyped)}


# -- the task's own metric ------------------------------------------------------------------
def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[labels], np.asarray(scores)[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs both classes")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def defect_batch(spec: GraphSpec, n: int, seed: int = 3) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
    """n smooth images in [0, 1] (a coarse random grid, upsampled), the second half with a
    bright scratch: a small labelled anomaly-detection set for any image-in graph."""
    image = spec.inputs[0]
    dims = {**example_dims(spec), "batch": n}
    shape = image.concrete_shape(dims)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], shape[1], 4, 4, generator=gen)
    images = F.interpolate(coarse, size=shape[2:], mode="bilinear", align_corners=False)
    images = (images + 0.02 * torch.randn(shape, generator=gen)).clamp(0, 1)
    labels = np.arange(n) >= n // 2
    h, w = shape[2], shape[3]
    for i in np.flatnonzero(labels):
        row = int(torch.randint(h // 4, 3 * h // 4, (1,), generator=gen))
        images[i, :, row : row + max(1, h // 32), w // 8 : 7 * w // 8] = 1.0
    rest = spec.example_inputs(dims, seed=seed)[1:]
    return (images, *rest), labels


def anomaly_metric(spec: GraphSpec, run: Callable[..., list[np.ndarray]]) -> dict[str, Any] | None:
    """Image AUROC of the score output on a defect batch, fp32 PyTorch against the export."""
    names = [t.name for t in spec.outputs]
    if "score" not in names or len(spec.inputs[0].shape) != 4:
        return None
    low, _, high = spec.dims.get("batch", (8, 8, 8))
    n = max(4, min(8, high))
    inputs, labels = defect_batch(spec, n)
    chunk = max(1, high)
    ref, got = [], []
    for start in range(0, n, chunk):  # keep within the graph's batch range
        part = tuple(x[start : start + chunk] for x in inputs)
        ref.append(reference_outputs(spec, part)[names.index("score")])
        got.append(run(*part)[names.index("score")])
    a, b = auroc(labels, np.concatenate(ref)), auroc(labels, np.concatenate(got))
    return {"metric": "image AUROC", "reference": a, "export": b, "delta": abs(a - b), "samples": n,
            "passed": abs(a - b) <= METRIC_TOLERANCE}


def agreement_metric(spec: GraphSpec, run: Callable[..., list[np.ndarray]]) -> dict[str, Any]:
    """Any task: relative L2 error per float output (and top-1 agreement for `logits`)."""
    inputs = spec.example_inputs(example_dims(spec), seed=4)
    ref, got = reference_outputs(spec, inputs), run(*inputs)
    outputs = {}
    for t, r, g in zip(spec.outputs, ref, got):
        if not np.issubdtype(r.dtype, np.floating):
            continue
        rel = float(np.linalg.norm(g.astype(np.float64) - r) / max(np.linalg.norm(r), 1e-12))
        entry: dict[str, Any] = {"relative_l2": rel, "passed": rel <= FP16_TOLERANCE.rel}
        if t.name == "logits" and r.ndim >= 2 and r.shape[-1] > 1:
            # top-1 over the class axis (the last: (B, C) or (B, queries, C)), counted where fp32 decides it:
            # a runner-up within fp16's absolute tolerance is a tie that rounding may flip either way
            top2 = np.sort(r, axis=-1)[..., -2:]
            decided = (top2[..., 1] - top2[..., 0]) > FP16_TOLERANCE.abs
            agree = r.argmax(-1) == g.argmax(-1)
            entry["top1_agreement"] = float(agree[decided].mean()) if decided.any() else 1.0
            entry["top1_ties_left_out"] = int((~decided).sum())
            entry["passed"] = entry["passed"] and entry["top1_agreement"] == 1.0
        outputs[t.name] = entry
    return {"metric": "output agreement", "outputs": outputs, "passed": all(o["passed"] for o in outputs.values())}


SEGMENTATION_AGREEMENT = 0.99  # share of pixels whose semantic class must not change


def segmentation_metric(spec: GraphSpec, run: Callable[..., list[np.ndarray]]) -> dict[str, Any] | None:
    """Mask-classification graphs (class_logits (B, Q, K+1), mask_logits (B, Q, h, w)): the
    per-pixel semantic class (Mask2Former / OneFormer semantic inference: softmax classes without
    "no object" times sigmoid masks, summed over queries, argmax) from the export against fp32
    PyTorch. None for other graphs (the generic agreement applies)."""
    names = [t.name for t in spec.outputs]
    if not {"class_logits", "mask_logits"} <= set(names):
        return None
    inputs = spec.example_inputs(example_dims(spec), seed=4)

    def semantic(outputs: list[Any]) -> np.ndarray:
        cls = torch.as_tensor(np.asarray(outputs[names.index("class_logits")], dtype=np.float32))
        masks = torch.as_tensor(np.asarray(outputs[names.index("mask_logits")], dtype=np.float32))
        return torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks.sigmoid()).argmax(1).numpy()

    ref, got = semantic(reference_outputs(spec, inputs)), semantic(run(*inputs))
    agreement = float((ref == got).mean())
    return {"metric": "semantic pixel agreement", "agreement": agreement, "samples": int(ref.shape[0]),
            "passed": agreement >= SEGMENTATION_AGREEMENT}


TASK_METRICS: dict[str, Callable[[GraphSpec, Callable[..., list[np.ndarray]]], dict[str, Any] | None]] = {
    "anomaly-detection": anomaly_metric,
    "segmentation": segmentation_metric,
}


def task_metric(task: str, spec: GraphSpec, path: str | Path) -> dict[str, Any]:
    """The task's metric computed through the exported file against fp32 PyTorch."""
    session = make_session(path, "cpu")
    names = [t.name for t in spec.outputs]

    def run(*inputs: torch.Tensor) -> list[np.ndarray]:
        return session.run(names, {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)})

    metric = TASK_METRICS.get(task)
    result = metric(spec, run) if metric is not None else None
    return result if result is not None else agreement_metric(spec, run)


def fp16_tolerance(spec: GraphSpec) -> Tolerance:
    """1e-2 abs or rel per element; a graph with hard thresholds inside may declare a small share
    of elements that fp16 rounding flips (`GraphSpec.fp16_mismatch_fraction`, with its reason)."""
    return dataclasses.replace(FP16_TOLERANCE, mismatch_fraction=spec.fp16_mismatch_fraction)


def export_onnx_fp16(
    pipeline: Pipeline,
    out_dir: str | Path,
    exporter: str = "auto",
    opset: int | None = None,
    weights: Any = None,
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """`zoo export NAME --format onnx-fp16`: `<graph>.onnx` in fp16 plus `export.json`.

    Per graph the manifest holds `parity_fp32` (the fp32 export against PyTorch), `parity`
    (the fp16 file against fp32 PyTorch, 1e-2), `task_metric` and `precision` (node counts)."""
    pipeline = prepare(pipeline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(pipeline, "onnx-fp16", weights)
    task = manifest["task"]
    scratch = Path(tempfile.mkdtemp(prefix=".fp32-", dir=out_dir))
    try:
        for spec in pipeline.graph_specs():
            entry = export_onnx_graph(spec, scratch, exporter, opset)
            if not entry["parity"]["passed"]:
                entry["parity_fp32"] = entry.pop("parity")
                entry["parity"] = {"passed": False, "tolerance": fp16_tolerance(spec).as_dict(),
                                   "checks": [{"passed": False, "dims": {}, "error": "the fp32 export already failed"}]}
                manifest["graphs"][spec.name] = entry
                continue
            target = out_dir / f"{spec.name}.onnx"
            entry["precision"] = convert_to_fp16(scratch / entry["file"], target)
            entry["precision"]["dtype"] = "float16"
            entry["external_data"] = entry["precision"].pop("external_data")
            entry["file"] = target.name
            entry["parity_fp32"] = {**entry.pop("parity"), "tolerance": FP32_TOLERANCE.as_dict()}
            entry["parity"] = check_parity(spec, target, fp16_tolerance(spec))
            entry["task_metric"] = task_metric(task, spec, target)
            entry["inputs"], entry["outputs"] = io_entries(target)
            manifest["graphs"][spec.name] = entry
    except Exception:
        write_manifest(out_dir, manifest)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_manifest(out_dir, manifest)
    if raise_on_failure:
        raise_if_failed(manifest, "parity")
        failed = [g for g, e in manifest["graphs"].items() if not e.get("task_metric", {}).get("passed", True)]
        if failed:
            raise ParityError(f"fp16 changes the task metric for graphs {failed}: " + "; ".join(str(manifest["graphs"][g]["task_metric"]) for g in failed))
    return manifest
