"""PVD evidence at CPU size (issue #18): held-out grounding accuracy and the paper's claims as ablations.

    python -m zoo.bench.pvd ablation --steps 600 --seeds 0,1,2 --out runs/pvd-ablation
    python -m zoo.bench.pvd steps --weights runs/pvd-ablation/pvd-seed0/model.safetensors,...   # one model per seed
    python -m zoo.bench.pvd report bench/results/pvd-ablation-cpu-DATE.json

`ablation`: three arms, each one `zoo train pvd --variant micro` run per seed through the card's
stage (zoo.bench.ablation.train_arm) on the procedural referring data, scored by its `finalize` on the
held-out split (Acc@0.5, mean box IoU, mIoU / oIoU of the rasterised polygons, Acc@0.5 on the
expressions that need a relation):
- `pvd`: the card's defaults (Center Anchor Mechanism + Angle Summation Loss);
- `no-asl`: the Angle Summation Loss off (`asl_weight=0`): the paper's ASL claim is on mask quality;
- `absolute`: vertices as image coordinates in [-1, 1] instead of CAM offsets from the predicted
  centre: the paper's CAM claim is on accuracy and on the stability of the training loss, reported
  here as the coefficient of variation (std / mean) of the logged diffusion loss over the second half
  of the run (a ratio, since the two arms' signals have different units).
`steps`: trained models (one per seed; default the demo weights), DDIM steps 1, 2, 4, 8 against
accuracy and time per expression (one thread, batch 16, interleaved rounds, median), mean +- std
over the models.

The table prints mean +- sample std over seeds. Writes bench/results/pvd-<suite>-cpu-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from zoo.bench.ablation import Arm, build_arm, train_arm
from zoo.bench.common import RESULTS_DIR, format_table, log, machine_info, mean_std, new_document, pin_threads, seed_list, write_document

KEYS = ("acc@0.5", "box_iou", "mIoU", "oIoU", "acc@0.5_relation")
# CPU-sized runs: fewer scenes than the demo run, so rendering the data does not eat the budget
BENCH_TRAIN = {"train_images": "600", "val_images": "60", "log_every": "10", "ckpt_every": "100000"}


def arms() -> tuple[Arm, ...]:
    return (
        Arm("pvd", "pvd", train=dict(BENCH_TRAIN), description="CAM + ASL (the card's defaults)"),
        Arm("no-asl", "pvd", train={**BENCH_TRAIN, "asl_weight": "0"}, description="Angle Summation Loss off"),
        Arm("absolute", "pvd", config={"anchor": "absolute"}, train=dict(BENCH_TRAIN),
            description="no CAM: vertices as image coordinates in [-1, 1]"),
    )




def loss_variation(log_file: Path) -> float:
    """std / mean of the logged diffusion loss (box + polygon) over the second half of a run."""
    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    values = [r["diffusion_box"] + r["diffusion_polygon"] for r in rows if "diffusion_box" in r]
    half = values[len(values) // 2:]
    return statistics.pstdev(half) / statistics.fmean(half) if len(half) > 1 else float("nan")


def ablation(steps: int, seeds: list[int], out: Path, batch: int) -> dict[str, Any]:
    from zoo.data.referring import generate_referring_dataset
    from zoo.models.pvd.train import PVDTrainConfig

    runs: dict[str, dict[int, dict[str, Any]]] = {}
    # the procedural data rendered once and shared by every run (train_arm's runs read workdir/data)
    defaults = PVDTrainConfig()
    shared = out / "data"
    if not (shared / "meta.json").is_file():
        generate_referring_dataset(shared, {"train": int(BENCH_TRAIN["train_images"]), "val": int(BENCH_TRAIN["val_images"])},
                                   seed=defaults.data_seed, image_size=96, twin_rate=defaults.twin_rate)
    for seed in seeds:  # seeds outermost: a stopped run still has every arm at the first seeds
        for arm in arms():
            arm.train["batch_size"] = str(batch)
            folder = out / f"{arm.name}-seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "data").exists():
                (folder / "data").symlink_to(shared.resolve())
            log(f"pvd ablation: {arm.name} seed {seed}, {steps} steps")
            result = train_arm(arm, steps, seed, folder)
            result["loss_cv"] = loss_variation(folder / "log.jsonl")
            runs.setdefault(arm.name, {})[seed] = result
            log(f"  {arm.name} seed {seed}: " + ", ".join(f"{k} {result['metrics'].get(k, float('nan')):.3f}" for k in KEYS)
                + f", loss cv {result['loss_cv']:.3f}, {result['seconds']} s")
    summary = {}
    for arm in arms():
        per = runs.get(arm.name, {})
        summary[arm.name] = {"description": arm.description,
                             **{k: mean_std([r["metrics"].get(k, float("nan")) for r in per.values()]) for k in KEYS},
                             "loss_cv": mean_std([r["loss_cv"] for r in per.values()]),
                             "seconds": mean_std([r["seconds"] for r in per.values()])}
    return {"steps": steps, "seeds": seeds, "batch_size": batch, "runs": runs, "summary": summary}


@torch.no_grad()
def steps_sweep_one(weights: str, step_counts: list[int], expressions: int, rounds: int) -> dict[str, Any]:
    from zoo.models.pvd.pipeline import normalise
    from zoo.models.pvd.tokenizer import encode
    from zoo.models.pvd.train import PVDTrainConfig, collate, evaluate, referring_sets

    pipeline = build_arm(Arm("pvd", "pvd"), weights)
    config = PVDTrainConfig(train_images=1, val_images=100)
    _, val, description = referring_sets("synthetic", pipeline.config.image_size, pipeline.config.polygon_vertices, config,
                                         Path("runs/pvd-bench-steps"))
    out: dict[str, Any] = {"weights": weights, "data": description, "per_steps": {}}
    batch = collate([val[i] for i in range(16)])
    images, tokens = normalise(batch["image"]), encode(batch["sentence"], pipeline.config.vocab, pipeline.config.max_tokens)
    times: dict[int, list[float]] = {n: [] for n in step_counts}
    for r in range(rounds):  # interleaved rounds, rotating order
        for n in step_counts[r % len(step_counts):] + step_counts[: r % len(step_counts)]:
            started = time.perf_counter()
            pipeline.ground(images, tokens, n, 0)
            times[n].append((time.perf_counter() - started) / len(batch["sentence"]))
    for n in step_counts:
        metrics = evaluate(pipeline.model, val, n, limit=expressions)
        out["per_steps"][n] = {**{k: metrics.get(k) for k in KEYS}, "ms_per_expression": 1000 * statistics.median(times[n])}
        log(f"pvd steps {n} ({weights}): " + ", ".join(f"{k} {metrics.get(k, float('nan')):.3f}" for k in KEYS)
            + f", {out['per_steps'][n]['ms_per_expression']:.1f} ms/expression")
    return out


def steps_sweep(weights: list[str], step_counts: list[int], expressions: int, rounds: int) -> dict[str, Any]:
    """Each model's sweep, then mean +- std over the models (one model per seed) for each step count."""
    models = [steps_sweep_one(w, step_counts, expressions, rounds) for w in weights]
    summary = {n: {k: mean_std([m["per_steps"][n][k] for m in models if m["per_steps"][n][k] is not None])
                   for k in (*KEYS, "ms_per_expression")} for n in step_counts}
    return {"models": models, "steps_summary": summary}


def print_table(result: dict[str, Any]) -> None:
    if "summary" in result:
        rows = [[name, *(f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in (*KEYS, "loss_cv"))] for name, s in result["summary"].items()]
        print(format_table(rows, ["arm", *KEYS, "loss_cv"]))
    if "steps_summary" in result:
        rows = [[n, *(f"{v[k]['mean']:.3f} +- {v[k]['std']:.3f}" for k in KEYS), f"{v['ms_per_expression']['mean']:.1f}"]
                for n, v in result["steps_summary"].items()]
        print(format_table(rows, ["steps", *KEYS, "ms/expr"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.pvd", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="suite", required=True)
    a = sub.add_parser("ablation")
    a.add_argument("--steps", type=int, default=600)
    a.add_argument("--seeds", type=seed_list, default="0,1,2")
    a.add_argument("--batch", type=int, default=16)
    a.add_argument("--out", type=Path, default=Path("runs/pvd-ablation"))
    s = sub.add_parser("steps")
    s.add_argument("--weights", default="zoo/models/pvd/weights/micro-demo.safetensors", help="comma-separated: one model per seed")
    s.add_argument("--steps", default="1,2,4,8")
    s.add_argument("--expressions", type=int, default=300)
    s.add_argument("--rounds", type=int, default=8)
    r = sub.add_parser("report")
    r.add_argument("path", type=Path)
    for p in (a, s):
        p.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.suite == "report":
        print_table(json.loads(args.path.read_text())["result"])
        return 0
    threads = pin_threads(1)
    if args.suite == "ablation":
        result = ablation(args.steps, args.seeds, args.out, args.batch)
    else:
        result = steps_sweep(args.weights.split(","), [int(x) for x in args.steps.split(",")], args.expressions, args.rounds)
    document = new_document(f"pvd-{args.suite}", quick=False, machine=machine_info(threads), result=result)
    path = write_document(document, args.results)
    print_table(result)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
