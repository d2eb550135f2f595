"""The precision ladder below fp32: calibration on the family's own data, int8 quantisation
(ONNX Runtime QDQ, OpenVINO NNCF), and the task-metric judge that refuses a lower precision.

    zoo export NAME --format onnx-int8 | openvino-bf16 | openvino-int8 --out DIR

Data. Each family's pipeline is run (`predict`) on inputs from its task's procedural generator
(zoo/data: anomaly parts with defects and masks, shapes scenes, rendered documents) or, for
tasks without one here, its card's bundled examples; a recording runner keeps every graph's
actual inputs. Calibration uses the `train` split, the judge a held-out `test` split (other seeds),
so the figures in the manifest are on data the quantiser never saw.

What is quantised (static, post-training, per-channel symmetric int8 weights, uint8 / int8
activations): the network layers only: Conv, ConvTranspose, MatMul, Gemm (ONNX Runtime's
`op_types_to_quantize`; NNCF: every other op type in an `IgnoredScope`). A graph's tail
(EfficientAD's resize, subtract, square, mean, pad of its maps) stays fp32: quantised, it is
clipped at the calibration range and the maps break (17-60% of their range, measured).

Graphs a pipeline calls more than once per prediction (a sampler's denoising step) stay fp32 in
an int8 export, and the manifest says why: per-step quantisation error compounds over the loop,
and no task metric over the whole loop is declared here.

The judge (`judge`): the task's metric from fp32 PyTorch and from the export on the held-out
inputs, with the tolerance declared per task in `TASK_TOLERANCES`; `passed` is false beyond it,
and the export refuses the file (ParityError) unless asked not to.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.export.common import ExportError, Tolerance, check_dims, compare, raise_if_refused, write_manifest

if TYPE_CHECKING:
    from zoo.pipeline import GraphSpec, Pipeline

RunFn = Callable[..., list[np.ndarray]]

ONNX_NETWORK_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
# Elementwise figures are recorded for lower precisions but do not decide: the task metric does.
LOW_PRECISION_TOLERANCE = {"bf16": Tolerance(abs=5e-2, rel=5e-2), "int8": Tolerance(abs=1e-1, rel=1e-1)}
CALIBRATION_ITEMS = 32  # predictions whose graph inputs calibrate int8 (train split)
HELD_OUT_ITEMS = 48  # predictions whose graph inputs judge a lower precision (test split)
HELD_OUT_ANOMALY = 96  # anomaly detection: half normal, half defective (AUROC resolves 1/2304 a pair)


@dataclass(frozen=True)
class TaskTolerance:
    """How far a lower precision may move the task's metric from fp32 (declared per task)."""

    metric: str
    tolerance: float
    how: str  # what `tolerance` bounds


TASK_TOLERANCES: dict[str, TaskTolerance] = {
    "anomaly-detection": TaskTolerance("image AUROC and AU-PRO (FPR 0.3)", 0.005, "absolute drop of each from fp32"),
    "segmentation": TaskTolerance("semantic pixel agreement with fp32", 0.99, "minimum share of pixels whose class is unchanged"),
    "object-detection": TaskTolerance("top-1 class agreement on confident queries + box relative L2", 0.99,
                                      "minimum agreement (and box relative L2 <= 0.05)"),
}
# Any other task: the relative L2 error of each float output on held-out inputs.
OUTPUT_TOLERANCE = {"bf16": 0.05, "int8": 0.1}


# -- the family's own data ---------------------------------------------------------------------
@dataclass
class FamilyData:
    """Raw inputs for `predict` and, where the task has them, labels (anomaly: label, mask)."""

    items: list[Any]
    source: str
    labels: list[int] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    seed_offset: int = 0  # a generator's first seed


def family_data(pipeline: Pipeline, split: str, n: int, seed: int = 0) -> FamilyData:
    """`n` inputs from the family's task generator (train split: calibration; test: held out)."""
    card = pipeline.card
    task = card.task if card is not None else ""
    own = getattr(pipeline.config, "image_size", None)
    size = int(min(max(own, 64), 256)) if isinstance(own, int) else 128  # the graph's own size where it has one
    if task == "anomaly-detection":
        from zoo.data.anomaly import defect_kinds_for, make_sample

        category = "parts"
        defects = list(defect_kinds_for(category))
        if split == "train":  # normal images only, as the model was trained
            plan = [("good", n)]
        else:  # half normal, half spread over the defect kinds (structural and logical)
            plan = [("good", n - n // 2)] + [(d, n // 2 // len(defects) + (i < n // 2 % len(defects))) for i, d in enumerate(defects)]
        data = FamilyData([], f"zoo.data.anomaly {category!r}, split {split}, seed {seed}")
        for defect, count in plan:
            for i in range(count):
                image, mask = make_sample(category, defect, seed=seed, index=i, image_size=size, split=split)[:2]
                data.items.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
                data.labels.append(int(defect != "good"))
                data.masks.append(np.asarray(mask, dtype=bool))
        return data
    if task == "document-enhancement":
        from zoo.data.documents import make_pair

        items = [(np.clip(make_pair(seed, "mixed", split, i, (size, size))[0], 0, 1) * 255).astype(np.uint8) for i in range(n)]
        items = [np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x for x in items]
        return FamilyData(items, f"zoo.data.documents mixed pages, split {split}, seed {seed}")
    if card is not None and not card.inputs:  # a generator: seeds are its data
        offset = 0 if split == "train" else 10_000
        return FamilyData([None] * n, f"seeds {offset}..{offset + n - 1}", seed_offset=offset)
    from zoo.data.shapes import generate_scene

    scenes = [generate_scene(seed, i, image_size=size, split=split) for i in range(n)]
    if card is not None and len(card.inputs) > 1:
        texts = [next((e for e in s.expressions() if e), "the shape") for s in scenes]
        items = [{spec.name: (s.image if spec.is_image else t) for spec in card.inputs if spec.required} for s, t in zip(scenes, texts)]
    else:
        items = [s.image for s in scenes]
    return FamilyData(items, f"zoo.data.shapes scenes, split {split}, seed {seed}")


class _Recorder:
    def __init__(self, run: Callable[..., Any]):
        self.run = run
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls.append(tuple(x.detach().to("cpu").clone() for x in inputs))
        out = self.run(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@dataclass
class Recorded:
    """Every graph's inputs as the pipeline called it on the family's data."""

    inputs: dict[str, list[tuple[torch.Tensor, ...]]]
    calls_per_prediction: dict[str, float]
    data: FamilyData
    error: str = ""


def record_graph_inputs(pipeline: Pipeline, data: FamilyData, chunk: int = 4, options: dict[str, Any] | None = None) -> Recorded:
    """Run `predict` on the data in chunks with a recorder in front of each graph (torch modules)."""
    specs = pipeline.graph_specs()
    recorders = {s.name: _Recorder(_torch_call(s.module)) for s in specs}
    for name, recorder in recorders.items():
        pipeline.set_runner(name, recorder)
    predictions = 0
    error = ""
    generator = all(item is None for item in data.items)
    try:
        for start in range(0, len(data.items), chunk):
            seeds = {"seed": data.seed_offset + start} if generator else {}  # a generator's data: its seeds
            pipeline.predict(data.items[start : start + chunk], **{**seeds, **(options or {})})
            predictions += 1
    except Exception as err:  # noqa: BLE001 - recorded: the caller falls back and says so
        error = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    finally:
        for name in recorders:
            pipeline.set_runner(name, None)
    calls = {n: len(r.calls) / max(predictions, 1) for n, r in recorders.items()}
    return Recorded({n: r.calls for n, r in recorders.items()}, calls, data, error)


def _torch_call(module: torch.nn.Module) -> Callable[..., Any]:
    def call(*inputs: torch.Tensor) -> Any:
        with torch.inference_mode():
            return module(*inputs)

    return call


@dataclass
class Calibration:
    """Calibration (train split) and held-out (test split) graph inputs for one pipeline."""

    train: Recorded
    test: Recorded
    reference: dict[str, list[np.ndarray]] = field(default_factory=dict)  # fp32 outputs on the held-out rows, per graph

    def samples(self, spec: GraphSpec, split: str = "train", limit: int = 64) -> tuple[list[tuple[torch.Tensor, ...]], str]:
        """The graph's recorded inputs split into batch-1 rows (at most `limit`), and where they come from;
        random inputs in the card's value range where the pipeline could not be run on family data."""
        rec = self.train if split == "train" else self.test
        calls = rec.inputs.get(spec.name) or []
        if not calls:
            seed = 100 if split == "train" else 200
            reason = rec.error or "the pipeline never called this graph"
            dims = {"batch": 1} if "batch" in spec.dims else {}
            return [spec.example_inputs(dims, seed=seed + i) for i in range(min(limit, 16))], f"random inputs in the card's value range ({reason})"
        rows: list[tuple[torch.Tensor, ...]] = []
        batched = "batch" in spec.dims
        for call in calls:
            if batched:
                rows.extend(tuple(x[i : i + 1] for x in call) for i in range(int(call[0].shape[0])))
            else:
                rows.append(call)
        if len(rows) > limit:  # spread over the whole run (a sampler's early and late steps)
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, limit).round().astype(int)]
        return rows, rec.data.source

    def iterative(self, spec: GraphSpec) -> float:
        """Calls of this graph per prediction of one item (> 1: a loop such as a sampler)."""
        calls = self.train.inputs.get(spec.name) or []
        if not calls:
            return 0.0
        items = len(self.train.data.items)
        rows = sum(int(c[0].shape[0]) if "batch" in spec.dims else 1 for c in calls)
        return rows / max(items, 1)


def calibration_inputs(pipeline: Pipeline, size: int | None = None) -> Calibration:
    size = size or CALIBRATION_ITEMS
    train = record_graph_inputs(pipeline, family_data(pipeline, "train", size, seed=0))
    task = pipeline.card.task if pipeline.card is not None else ""
    held_out = HELD_OUT_ANOMALY if task == "anomaly-detection" else HELD_OUT_ITEMS
    test = record_graph_inputs(pipeline, family_data(pipeline, "test", max(size, held_out), seed=1))
    return Calibration(train, test)


def ladder_refusal(pipeline: Pipeline, precision: str) -> str | None:
    """Why a family gets no export at this precision at all (None: it does)."""
    if not pipeline.graph_specs():
        return "the card declares no exportable graphs"
    return None


def step_inputs_vary(calibration: Calibration, spec: GraphSpec) -> bool:
    """True when a per-row scalar input (shape ("batch",): a timestep, a noise level) takes several
    values over the recorded calls: a sampler stepping, not tiles or prompts through one graph."""
    calls = calibration.train.inputs.get(spec.name) or []
    for index, tensor in enumerate(spec.inputs):
        if len(tensor.shape) == 1 and isinstance(tensor.shape[0], str):
            values = {float(v) for call in calls for v in call[index].reshape(-1).tolist()}
            if len(values) > 1:
                return True
    return False


def iterative_reason(calibration: Calibration, spec: GraphSpec) -> str | None:
    """Why a graph stays fp32 in an int8 export (None: it is quantised): called several times a
    prediction with a stepping scalar input, i.e. an iterative sampler's step."""
    calls = calibration.iterative(spec)
    if calls > 1.5 and step_inputs_vary(calibration, spec):
        return (f"kept fp32: called {calls:.0f} times per prediction with a stepping timestep/noise-level input (an iterative sampler); "
                "per-step int8 error compounds over the loop "
                "and no task metric over the whole loop is declared")
    return None


# -- quantisers --------------------------------------------------------------------------------
def nncf_quantize(model: Any, spec: GraphSpec, calibration: Calibration) -> tuple[Any, dict[str, Any]]:
    """Static int8 with NNCF (OpenVINO): network layers only; returns (ov.Model, manifest entry)."""
    reason = iterative_reason(calibration, spec)
    if reason:
        return model, {"quantized": False, "reason": reason}
    import nncf

    samples, source = calibration.samples(spec, "train")
    types = sorted({op.get_type_name() for op in model.get_ops()})
    from zoo.export.openvino import NETWORK_TYPES

    ignored = [t for t in types if t not in NETWORK_TYPES and t not in ("Parameter", "Result", "Constant")]
    dataset = nncf.Dataset([{i: x.numpy() for i, x in enumerate(s)} for s in samples])
    quantized = nncf.quantize(
        model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(types=ignored, validate=False),
    )
    fq = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    return quantized, {
        "quantized": fq > 0, "tool": f"nncf {nncf.__version__} quantize (preset performance, min-max)",
        "calibration": {"source": source, "samples": len(samples)},
        "quantized_types": [t for t in types if t in NETWORK_TYPES], "kept_fp32_types": ignored, "fake_quantize_nodes": fq,
    }


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded inputs."""

    def __init__(self, names: list[str], samples: list[tuple[torch.Tensor, ...]]):
        self.all_feeds = [{n: x.numpy() for n, x in zip(names, s)} for s in samples]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # MinMax reads once; other calibration methods read the data again
        self.feeds = iter(self.all_feeds)


def ort_quantize(src: Path, dst: Path, spec: GraphSpec, calibration: Calibration) -> dict[str, Any]:
    """Static int8 QDQ with ONNX Runtime's tools: Conv/MatMul/Gemm only, per-channel weights."""
    reason = iterative_reason(calibration, spec)
    if reason:
        shutil.copyfile(src, dst)
        return {"quantized": False, "reason": reason}
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples, source = calibration.samples(spec, "train")
    names = [t.name for t in spec.inputs]
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(names, samples)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the file as it is
            shutil.copyfile(src, pre)
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=ONNX_NETWORK_OPS,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    model = onnx.load(str(dst))
    rewired = keep_tail_fp32(model.graph)
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    qdq = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    return {
        "quantized": qdq > 0, "tool": f"onnxruntime {onnxruntime.__version__} quantize_static (QDQ, min-max, per-channel weights)",
        "calibration": {"source": source, "samples": len(samples)}, "quantized_types": ONNX_NETWORK_OPS,
        "quantize_linear_nodes": qdq, "tail_inputs_kept_fp32": rewired,
    }


# Ops that may read a dequantised network activation: the quantised layers and what ORT fuses into them.
QDQ_READERS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "Clip", "MaxPool", "QuantizeLinear"}


def keep_tail_fp32(graph: Any) -> int:
    """ONNX Runtime's QDQ quantiser also quantises a Conv's output (so DQ -> Conv -> Q fuses into
    QLinearConv); a network's last layer then hands its consumers values clipped at the
    calibration range. Every other consumer (the map tail: subtract, square, mean, resize, pad)
    is rewired to read the layer's fp32 output instead; returns how many inputs were rewired."""
    producers = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.op_type in QDQ_READERS or node.op_type == "DequantizeLinear":
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in producers:
                continue  # a quantised weight or an input without an fp32 source
            node.input[i] = q.input[0]
            rewired += 1
    return rewired


# -- parity and the judge ----------------------------------------------------------------------
def check_runner_parity(spec: GraphSpec, run: RunFn, tol: Tolerance, elementwise: bool = True, seed: int = 1) -> dict[str, Any]:
    """Like zoo.export.onnx.check_parity for any runtime (`run(*arrays) -> arrays`). With
    elementwise=False (lower precisions) the figures are recorded but only shapes decide."""
    from zoo.export.onnx import reference_outputs

    checks = []
    for dims in check_dims(spec):
        inputs = spec.example_inputs(dims, seed=seed)
        entry: dict[str, Any] = {"dims": dims, "outputs": {}}
        try:
            got = run(*(x.numpy() for x in inputs))
        except Exception as err:  # noqa: BLE001 - a runtime failure at new sizes is a parity failure
            entry.update(passed=False, error=f"runtime failed: {str(err).splitlines()[0][:300]}")
            checks.append(entry)
            continue
        for t, r, g in zip(spec.outputs, reference_outputs(spec, inputs), got):
            figures = compare(r, np.asarray(g), tol)
            declared = list(t.concrete_shape(dims))
            if list(np.asarray(g).shape) != declared:
                figures.update(passed=False, error=f"shape {list(np.asarray(g).shape)} != the card's {declared}")
            elif not elementwise and "error" not in figures:
                figures["passed"] = True
            entry["outputs"][t.name] = figures
        entry["passed"] = all(o["passed"] for o in entry["outputs"].values())
        checks.append(entry)
    out: dict[str, Any] = {"passed": all(c["passed"] for c in checks), "tolerance": tol.as_dict(), "checks": checks}
    if not elementwise:
        out["decided_by"] = "task_metric (elementwise figures recorded, not gating)"
    return out


def _run_all(spec: GraphSpec, run: RunFn, rows: list[tuple[torch.Tensor, ...]], chunk: int = 8) -> list[np.ndarray]:
    """Run `run` over batch-1 rows in chunks (inside the graph's batch range); concatenated outputs."""
    high = spec.dims.get("batch", (1, 1, 1))[2] if "batch" in spec.dims else 1
    chunk = max(1, min(chunk, high))
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(rows), chunk):
        group = rows[start : start + chunk]
        inputs = [torch.cat([r[i] for r in group]) if "batch" in spec.dims else group[0][i] for i in range(len(spec.inputs))]
        if "batch" not in spec.dims:
            for r in group:
                parts.append([np.asarray(o) for o in run(*(x.numpy() for x in r))])
            continue
        parts.append([np.asarray(o) for o in run(*(x.numpy() for x in inputs))])
    return [np.concatenate([p[i] for p in parts]) if "batch" in spec.dims else np.stack([p[i] for p in parts]) for i in range(len(spec.outputs))]


def _torch_run(spec: GraphSpec) -> RunFn:
    from zoo.export.onnx import reference_outputs

    return lambda *arrays: reference_outputs(spec, tuple(torch.from_numpy(np.asarray(a)) for a in arrays))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(np.asarray(a).ravel(), np.asarray(b).ravel()).statistic
    return float(value) if np.isfinite(value) else 1.0


def judge(pipeline: Pipeline, spec: GraphSpec, run: RunFn, precision: str, calibration: Calibration | None = None) -> dict[str, Any]:
    """The task's metric, fp32 PyTorch against the export, on held-out inputs from the family's data."""
    calibration = calibration or calibration_inputs(pipeline)
    task = pipeline.card.task if pipeline.card is not None else ""
    rows, source = calibration.samples(spec, "test", limit=max(HELD_OUT_ITEMS, len(calibration.test.data.items)))
    names = [t.name for t in spec.outputs]
    if spec.name not in calibration.reference:  # fp32 once per graph, however many rungs are judged
        calibration.reference[spec.name] = _run_all(spec, _torch_run(spec), rows)
    ref = calibration.reference[spec.name]
    got = _run_all(spec, run, rows)
    base: dict[str, Any] = {"precision": precision, "held_out": {"source": source, "samples": len(rows)}}
    data = calibration.test.data
    if task == "anomaly-detection" and {"score", "anomaly_map"} <= set(names) and len(data.labels) == len(rows):
        from zoo.metrics.anomaly import au_pro, image_auroc

        tol = TASK_TOLERANCES[task]
        labels = np.asarray(data.labels)
        ref_s, got_s = ref[names.index("score")], got[names.index("score")]
        ref_m, got_m = ref[names.index("anomaly_map")][:, 0], got[names.index("anomaly_map")][:, 0]
        masks = np.stack([_resize_mask(m, ref_m.shape[-2:]) for m in data.masks])
        figures = {
            "image_auroc": {"fp32": image_auroc(ref_s, labels), "export": image_auroc(got_s, labels)},
            "au_pro": {"fp32": au_pro(ref_m, masks), "export": au_pro(got_m, masks)},
        }
        for f in figures.values():
            f["drop"] = f["fp32"] - f["export"]
        span = float(ref_m.max() - ref_m.min()) or 1.0
        return {**base, "metric": tol.metric, "tolerance": tol.tolerance, "tolerance_means": tol.how, "figures": figures,
                "score_rank_correlation": spearman(ref_s, got_s), "map_max_error_of_range": float(np.abs(ref_m - got_m).max() / span),
                "passed": all(f["drop"] <= tol.tolerance for f in figures.values())}
    if task == "segmentation" and {"class_logits", "mask_logits"} <= set(names):
        tol = TASK_TOLERANCES[task]

        def semantic(outs: list[np.ndarray]) -> np.ndarray:
            cls = torch.from_numpy(outs[names.index("class_logits")].astype(np.float32))
            masks = torch.from_numpy(outs[names.index("mask_logits")].astype(np.float32))
            return torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks.sigmoid()).argmax(1).numpy()

        agreement = float((semantic(ref) == semantic(got)).mean())
        return {**base, "metric": tol.metric, "tolerance": tol.tolerance, "tolerance_means": tol.how,
                "figures": {"agreement": agreement}, "passed": agreement >= tol.tolerance}
    if task == "object-detection" and "logits" in names and "boxes" in names:
        tol = TASK_TOLERANCES[task]
        r_logits, g_logits = ref[names.index("logits")], got[names.index("logits")]
        prob = torch.from_numpy(r_logits.astype(np.float32)).sigmoid().numpy()
        confident = prob.max(-1) > 0.3
        if not confident.any():  # weak demo weights: judge the 10% most confident queries
            confident = prob.max(-1) >= np.quantile(prob.max(-1), 0.9)
        agree = float((r_logits.argmax(-1) == g_logits.argmax(-1))[confident].mean())
        r_boxes, g_boxes = ref[names.index("boxes")], got[names.index("boxes")]
        box_l2 = float(np.linalg.norm(g_boxes - r_boxes)) / max(float(np.linalg.norm(r_boxes)), 1e-12)
        return {**base, "metric": tol.metric, "tolerance": tol.tolerance, "tolerance_means": tol.how,
                "figures": {"top1_agreement": agree, "confident_queries": int(confident.sum()), "box_relative_l2": box_l2},
                "passed": agree >= tol.tolerance and box_l2 <= 0.05}
    limit = OUTPUT_TOLERANCE[precision]
    outputs: dict[str, dict[str, Any]] = {}
    for t, r, g in zip(spec.outputs, ref, got):
        if not np.issubdtype(r.dtype, np.floating):
            outputs[t.name] = {"exact": bool(np.array_equal(r, g)), "passed": bool(np.array_equal(r, g))}
            continue
        rel = float(np.linalg.norm(g.astype(np.float64) - r)) / max(float(np.linalg.norm(r)), 1e-12)
        outputs[t.name] = {"relative_l2": rel, "passed": rel <= limit}
    return {**base, "metric": "relative L2 error of each output against fp32", "tolerance": limit,
            "tolerance_means": "maximum relative L2 per output", "figures": outputs, "passed": all(o["passed"] for o in outputs.values())}


def _resize_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.interpolate(t, size=tuple(shape), mode="nearest")[0, 0].numpy() > 0.5)


# -- onnx-int8 ---------------------------------------------------------------------------------
def export_onnx_int8(
    pipeline: Pipeline,
    out_dir: str | Path,
    exporter: str = "auto",
    weights: Any = None,
    raise_on_failure: bool = True,
    calibration_size: int | None = None,
) -> dict[str, Any]:
    """`zoo export NAME --format onnx-int8`: QDQ `<graph>.onnx` per graph plus `export.json`, judged
    on the task metric (runs on `backend="onnxruntime"`)."""
    from zoo.export.onnx import base_manifest, export_onnx_graph, io_entries, prepare
    from zoo.export.runtime import make_session

    pipeline = prepare(pipeline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(pipeline, "onnx-int8", weights)
    scratch = Path(tempfile.mkdtemp(prefix=".fp32-", dir=out_dir))
    try:
        calibration = calibration_inputs(pipeline, size=calibration_size)
        for spec in pipeline.graph_specs():
            entry = export_onnx_graph(spec, scratch, exporter)
            entry["parity_fp32"] = entry.pop("parity")
            if not entry["parity_fp32"]["passed"]:
                entry["parity"] = {"passed": False, "checks": [{"passed": False, "dims": {}, "error": "the fp32 export already failed"}]}
                manifest["graphs"][spec.name] = entry
                continue
            target = out_dir / f"{spec.name}.onnx"
            entry["quantization"] = ort_quantize(scratch / entry["file"], target, spec, calibration)
            entry["file"] = target.name
            session = make_session(target, "cpu")
            out_names = [t.name for t in spec.outputs]
            in_names = [t.name for t in spec.inputs]

            def run(*arrays: np.ndarray, _s: Any = session, _o: list[str] = out_names, _i: list[str] = in_names) -> list[np.ndarray]:
                return _s.run(_o, dict(zip(_i, arrays)))

            entry["parity"] = check_runner_parity(spec, run, LOW_PRECISION_TOLERANCE["int8"], elementwise=False)
            entry["task_metric"] = judge(pipeline, spec, run, "int8", calibration)
            entry["parity"]["passed"] = entry["parity"]["passed"] and entry["task_metric"]["passed"]
            entry["inputs"], entry["outputs"] = io_entries(target)
            manifest["graphs"][spec.name] = entry
    except Exception:
        write_manifest(out_dir, manifest)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_manifest(out_dir, manifest)
    if raise_on_failure:
        raise_if_refused(manifest, "onnx-int8", out_dir)
    return manifest


__all__ = [
    "TASK_TOLERANCES", "Calibration", "ExportError", "FamilyData", "calibration_inputs", "check_runner_parity",
    "export_onnx_int8", "family_data", "judge", "nncf_quantize", "ort_quantize", "record_graph_inputs",
]
