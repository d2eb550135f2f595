"""Reference suite: our EfficientAD-S/-M against anomalib's `EfficientAdModel`, same weights, same input.

anomalib is an optional bench dependency (`pip install anomalib==2.7.0`); the tests never need
it. Both models get the same random weights: anomalib's model is built with a fixed seed, given
non-trivial teacher statistics and quantiles (so both normalisation paths run), and its state
dict is converted into ours by `zoo.models.efficientad.convert.convert_state_dict`; the maps are
compared before anything is timed.

Measured side by side in interleaved rounds, batch 1 at 256 x 256 (the paper's setting):
- inference: ours eager, ours on ONNX Runtime (exported by `zoo.export.onnx`), anomalib eager;
- one training step (forward, backward, Adam step on student + autoencoder, as both training
  wrappers do): ours (`EfficientADTrainable.training_step`) against anomalib's training forward,
  with the same image and the same penalty image.

Goals: ONNX Runtime at least 1.5x faster than anomalib's eager inference, and no slower per
training step (anomalib step time / ours >= 1).

    zoo bench reference [--quick] [--json]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import (
    Budget,
    error_text,
    format_table,
    log,
    machine_info,
    measure_interleaved,
    new_document,
    pin_threads,
    ratio,
    round_sig,
    time_call,
    write_document,
)

ANOMALIB_PIN = "anomalib==2.7.0"
INSTALL_HINT = f"the reference suite compares against anomalib: install it with `pip install {ANOMALIB_PIN}`"
IMAGE_SIZE = 256
SIZES = {True: ("s",), False: ("s", "m")}
# Quick runs are CI smoke tests: the paper's widths at 256 x 256 but 64 teacher channels, so the
# export and the training steps fit in a minute on two shared cores. Full runs use C = 384.
OUT_CHANNELS = {True: 64, False: 384}
BUDGET_S = {True: 60.0, False: 300.0}
INFER_REPS = {True: (3, 15), False: (7, 60)}
TRAIN_REPS = {True: (2, 5), False: (3, 20)}  # after one warm-up step each (Adam state)
GOAL_ORT_VS_ANOMALIB = 1.5
GOAL_TRAIN_STEP = 1.0


class AnomalibMissing(RuntimeError):
    """anomalib is not installed; the message says how to install it."""


def anomalib_model_class() -> tuple[type, type]:
    """(EfficientAdModel, EfficientAdModelSize) from anomalib, or AnomalibMissing with the pip line."""
    try:
        from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel, EfficientAdModelSize
    except ImportError as err:
        raise AnomalibMissing(f"{INSTALL_HINT} ({error_text(err)})") from err
    return EfficientAdModel, EfficientAdModelSize


class FixedPenalty:
    """The penalty-image source our trainable expects (`draw(count)`), always the same image,
    so both implementations see identical inputs."""

    def __init__(self, image: torch.Tensor):
        self.image = image

    def draw(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.image.expand(count, -1, -1, -1)


def build_pair(size: str, out_channels: int, seed: int = 0) -> tuple[Any, torch.nn.Module]:
    """(our pipeline, anomalib's model) with the same weights, both in eval mode on the CPU."""
    from zoo.models.efficientad.convert import convert_state_dict
    from zoo.registry import build_pipeline, variant_config

    model_cls, size_enum = anomalib_model_class()
    torch.manual_seed(seed)
    theirs = model_cls(teacher_out_channels=out_channels, model_size=size_enum.S if size == "s" else size_enum.M)
    gen = torch.Generator().manual_seed(seed + 1)
    theirs.eval()
    with torch.no_grad():
        # Non-trivial statistics so both implementations run their normalisation: random teacher
        # channel mean/std (Sec. 3.2), then the 0.9 / 0.995 map quantiles (Sec. 3.4) taken on a
        # calibration image the way anomalib takes them (`get_maps(normalize=False)`).
        theirs.mean_std["mean"].copy_(0.1 * torch.randn(theirs.mean_std["mean"].shape, generator=gen))
        theirs.mean_std["std"].copy_(0.5 + torch.rand(theirs.mean_std["std"].shape, generator=gen))
        map_st, map_ae = theirs.get_maps(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), normalize=False)
        for name, maps in (("st", map_st), ("ae", map_ae)):
            theirs.quantiles[f"qa_{name}"].copy_(torch.quantile(maps.flatten(), 0.9))
            theirs.quantiles[f"qb_{name}"].copy_(torch.quantile(maps.flatten(), 0.995))
    config = variant_config("efficientad", size, {"out_channels": out_channels, "image_size": IMAGE_SIZE})
    ours = build_pipeline("efficientad", size, config=config)
    ours.model.load_state_dict(convert_state_dict(theirs.state_dict(), config), strict=True)
    ours.eval()
    return ours, theirs


def _anomalib_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return out.anomaly_map, out.pred_score


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    budget_s: float | None = None,
    command: str | None = None,
    sizes: tuple[str, ...] | None = None,
    out_channels: int | None = None,
    onnxruntime: bool = True,
    infer_reps: tuple[int, int] | None = None,
    train_reps: tuple[int, int] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Compare with anomalib; raises AnomalibMissing (with the pip line) when it is not installed.

    `infer_reps` / `train_reps` = (min, max) rounds override the quick/full defaults (tests use 1-2)."""
    anomalib_model_class()  # fail first, and clearly, without anomalib
    from importlib.metadata import version

    threads = pin_threads(threads)
    budget = Budget(budget_s or BUDGET_S[quick])
    sizes = tuple(sizes or SIZES[quick])
    channels = int(out_channels or OUT_CHANNELS[quick])
    document = new_document(
        "reference",
        quick=quick,
        machine=machine_info(threads),
        command=command,
        settings={
            "threads": threads,
            "anomalib": version("anomalib"),
            "sizes": list(sizes),
            "image_size": IMAGE_SIZE,
            "batch": 1,
            "out_channels": channels,
            "budget_s": budget.seconds,
            "infer_reps": list(infer_reps or INFER_REPS[quick]),
            "train_reps": list(train_reps or TRAIN_REPS[quick]),
            "weights": "anomalib EfficientAdModel, seed 0, random statistics and quantiles; converted into ours",
            "train_step": "zero_grad + forward (training losses) + backward + Adam(lr 1e-4, wd 1e-5) step over student and autoencoder",
            "goals": {"onnxruntime_vs_anomalib_eager": GOAL_ORT_VS_ANOMALIB, "train_step_anomalib_vs_ours": GOAL_TRAIN_STEP},
        },
        results=[],
        skipped=[],
    )
    if channels != 384:
        document["settings"]["note"] = f"teacher channels {channels} instead of 384: a quick smoke test, not the paper's model"
    log(f"reference: anomalib {version('anomalib')}, sizes {', '.join(sizes)}, C={channels}, threads {threads}, budget {budget.seconds:.0f} s")
    for size in sizes:
        if budget.remaining < 10:
            document["skipped"].append({"size": size, "reason": "time budget spent"})
            continue
        reps = (tuple(infer_reps or INFER_REPS[quick]), tuple(train_reps or TRAIN_REPS[quick]))
        document["results"].append(_compare(size, channels, threads, budget, quick, onnxruntime, reps))
    document["elapsed_s"] = round(budget.elapsed, 1)
    if out_dir is not None:
        log(f"reference: wrote {write_document(document, out_dir)}")
    return document


def _compare(size: str, channels: int, threads: int, budget: Budget, quick: bool, onnxruntime: bool,
             reps: tuple[tuple[int, int], tuple[int, int]]) -> dict[str, Any]:
    from zoo.bench.graphs import eager_runner, onnx_graphs
    from zoo.models.efficientad.train import EfficientADTrainable

    name = f"EfficientAD-{size.upper()}"
    ours, theirs = build_pair(size, channels)
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    penalty = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    entry: dict[str, Any] = {"model": name, "size": size, "params": sum(p.numel() for p in ours.model.parameters())}

    with torch.inference_mode():
        our_map, our_score = ours.model(image)
        their_map, their_score = _anomalib_outputs(theirs(image))
    entry["parity"] = {
        "map_max_abs": round_sig(float((our_map - their_map).abs().max()), 3),
        "score_max_abs": round_sig(float((our_score.flatten() - their_score.flatten()).abs().max()), 3),
        "map_scale": round_sig(float(their_map.abs().max()), 3),
    }
    log(f"  {name}: same weights, map max |ours - anomalib| = {entry['parity']['map_max_abs']} (map max {entry['parity']['map_scale']})")

    contenders: dict[str, Callable[[], Any]] = {
        "ours_eager": eager_runner(ours.model, (image,)),
        "anomalib_eager": eager_runner(theirs, (image,)),
    }
    onnx = None
    if onnxruntime:
        log(f"  {name}: exporting to ONNX ...")
        onnx = onnx_graphs(ours, threads)
        entry["onnx_export"] = onnx.info or {"error": onnx.error}
        runner = onnx.runners.get("efficientad")
        if runner is not None:
            contenders["ours_onnxruntime"] = lambda: runner(image)
        else:
            entry["onnxruntime_skipped"] = onnx.error
    try:
        estimate = sum(time_call(fn) for fn in contenders.values())
        low, high = reps[0]
        if estimate * (low + 1) > budget.remaining:
            entry["inference_skipped"] = f"time budget: needs about {estimate * (low + 1):.0f} s"
        else:
            timings = measure_interleaved(contenders, warmup=1, min_reps=low, max_reps=high, budget_s=min(45.0 if not quick else 3.0, budget.remaining / 3))
            entry["inference"] = {k: t.summary() for k, t in timings.items()}
            med = {k: t.median_ms for k, t in timings.items()}
            best = {k: min(t.samples_ms) for k, t in timings.items()}
            entry["ratios"] = {
                "anomalib_eager_vs_ours_eager": ratio(med["anomalib_eager"], med["ours_eager"]),
                "anomalib_eager_vs_ours_onnxruntime": ratio(med["anomalib_eager"], med.get("ours_onnxruntime")),
            }
            # Few rounds on a shared machine: the ratio of fastest calls is a second, spike-free view.
            entry["ratios_of_min"] = {
                "anomalib_eager_vs_ours_eager": ratio(best["anomalib_eager"], best["ours_eager"]),
                "anomalib_eager_vs_ours_onnxruntime": ratio(best["anomalib_eager"], best.get("ours_onnxruntime")),
            }
            log(f"  {name} inference: anomalib eager / ours eager x{entry['ratios']['anomalib_eager_vs_ours_eager']}, "
                f"/ ours ONNX Runtime x{entry['ratios']['anomalib_eager_vs_ours_onnxruntime']}")
    finally:
        if onnx is not None:
            onnx.close()

    # One training step each (Algorithm 1 / anomalib's training forward), same image and penalty.
    trainable = EfficientADTrainable(ours.model, penalty=FixedPenalty(penalty))
    trainable.train()
    theirs.train()
    ours_opt = torch.optim.Adam([*ours.model.student.parameters(), *ours.model.ae.parameters()], lr=1e-4, weight_decay=1e-5)
    their_opt = torch.optim.Adam([*theirs.student.parameters(), *theirs.ae.parameters()], lr=1e-4, weight_decay=1e-5)

    def ours_step() -> None:
        ours_opt.zero_grad(set_to_none=True)
        trainable.training_step({"image": image})["loss"].backward()
        ours_opt.step()

    def anomalib_step() -> None:
        their_opt.zero_grad(set_to_none=True)
        loss_st, loss_ae, loss_stae = theirs(image, penalty)
        (loss_st + loss_ae + loss_stae).backward()
        their_opt.step()

    steps = {"ours": ours_step, "anomalib": anomalib_step}
    low, high = reps[1]
    estimate = sum(time_call(fn) for fn in steps.values()) if budget.remaining > 10 else float("inf")  # warm-up round
    if estimate * low > budget.remaining:
        entry["train_step_skipped"] = f"time budget: needs about {estimate * low:.0f} s, {budget.remaining:.0f} s left"
        log(f"  {name} training step skipped: {entry['train_step_skipped']}")
    else:
        timings = measure_interleaved(steps, warmup=0, min_reps=low, max_reps=high, budget_s=min(30.0 if not quick else 3.0, budget.remaining / 2))
        entry["train_step"] = {k: t.summary() for k, t in timings.items()}
        entry.setdefault("ratios", {})["train_step_anomalib_vs_ours"] = ratio(timings["anomalib"].median_ms, timings["ours"].median_ms)
        entry.setdefault("ratios_of_min", {})["train_step_anomalib_vs_ours"] = ratio(min(timings["anomalib"].samples_ms), min(timings["ours"].samples_ms))
        log(f"  {name} training step: anomalib / ours x{entry['ratios']['train_step_anomalib_vs_ours']}")
    ratios = entry.get("ratios", {})
    entry["goals_met"] = {
        "onnxruntime_vs_anomalib_eager": _met(ratios.get("anomalib_eager_vs_ours_onnxruntime"), GOAL_ORT_VS_ANOMALIB),
        "train_step_anomalib_vs_ours": _met(ratios.get("train_step_anomalib_vs_ours"), GOAL_TRAIN_STEP),
    }
    return entry


def _met(value: float | None, goal: float) -> bool | None:
    return None if value is None else bool(value >= goal)


def render(document: dict[str, Any]) -> str:
    rows = []
    for e in document["results"]:
        r = e.get("ratios", {})
        rows.append([
            e["model"],
            e["parity"]["map_max_abs"],
            f"x{r.get('anomalib_eager_vs_ours_eager')}",
            f"x{r.get('anomalib_eager_vs_ours_onnxruntime')} (goal x{GOAL_ORT_VS_ANOMALIB}: {_word(e['goals_met']['onnxruntime_vs_anomalib_eager'])})",
            f"x{r.get('train_step_anomalib_vs_ours')} (goal x{GOAL_TRAIN_STEP}: {_word(e['goals_met']['train_step_anomalib_vs_ours'])})",
        ])
    s = document["settings"]
    lines = [
        f"reference vs anomalib {s['anomalib']} ({document['date']}, threads {s['threads']}, batch 1, {s['image_size']}x{s['image_size']}, C={s['out_channels']}):",
        format_table(rows, ["model", "map diff", "anomalib/ours eager", "anomalib eager/ours ORT", "train step anomalib/ours"]),
        "ratios are anomalib's median time over ours in the same interleaved rounds (above 1: ours faster)",
    ]
    if "note" in s:
        lines.append(f"note: {s['note']}")
    for e in document["results"]:
        lines += [f"{e['model']}: {key.replace('_', ' ')}: {e[key]}" for key in ("onnxruntime_skipped", "inference_skipped", "train_step_skipped") if key in e]
    lines += [f"skipped {x['size']}: {x['reason']}" for x in document["skipped"]]
    return "\n".join(lines)


def _word(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "not met")
