"""The papers' design claims as small ablations: several arms trained side by side on the same
procedural data, with the same seed and step budget, then compared on the task's metrics.

    python -m zoo.bench.ablation vidt --steps 600
    python -m zoo.bench.ablation oneformer --steps 600
    python -m zoo.bench.ablation vidt --steps 600 --reuse last=runs/vidt-micro
    python -m zoo.bench.ablation vidt --steps 600 --seeds 0,1,2      # mean ± std and paired differences

Each arm is one training run of a registered model (`zoo train`'s code path: the card's first
training stage, its variant defaults, the shared loop) with model-config and training-config
overrides; its metrics are what the family's training task measures on the held-out split at
the end. `--reuse ARM=RUN` takes an arm from a finished `zoo train` run (its model.json) instead
of training it again, so the demo weights and the ablation share one run. Graph latency is
measured side by side (interleaved rounds, one thread) on the trained arms.

Suites:
- `vidt`: ViDT micro with DET x PATCH cross-attention at the last stage only (the paper's RAM,
  Sec. 3, and its ablation of where cross-attention runs) against cross-attention at every stage: AP and latency; and ViDT+ micro
  (EPFF, UQR, IoU-aware and token-labeling losses, the ViDT+ paper's modules) against plain ViDT.
- `oneformer`: one model trained jointly on the three tasks (the paper's claim, Sec. 3)
  against three single-task models that together get the same number of steps; and the joint
  model without the query-text contrastive loss (Sec. 3.3 and its ablations).

Writes bench/results/ablation-<suite>-<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import (
    RESULTS_DIR,
    format_table,
    log,
    machine_info,
    mean_std,
    measure_interleaved,
    new_document,
    pin_threads,
    seed_list,
    write_document,
)


@dataclass(frozen=True)
class Arm:
    """One training run of the ablation."""

    name: str
    model: str
    variant: str = "micro"
    config: dict[str, Any] = field(default_factory=dict)  # model-config overrides
    train: dict[str, str] = field(default_factory=dict)  # training-config overrides (`--set` strings)
    step_share: float = 1.0  # fraction of the suite's --steps this arm trains
    description: str = ""
    stage: str | None = None  # the card's training stage (None: its first)


SUITES: dict[str, tuple[Arm, ...]] = {
    "vidt": (
        Arm("last", "vidt", description="ViDT: DET x PATCH cross-attention at the last stage only (the paper's RAM)"),
        Arm("every", "vidt", config={"cross_attention_stages": (0, 1, 2, 3)},
            description="ViDT with DET x PATCH cross-attention at every stage"),
        Arm("plus", "vidt-plus", description="ViDT+: EPFF, UQR masks, IoU-aware and token-labeling losses"),
    ),
    "oneformer": (
        Arm("joint", "oneformer", description="one model, tasks sampled uniformly per image (the paper)"),
        Arm("semantic", "oneformer", train={"tasks": "semantic"}, step_share=1 / 3, description="semantic only, a third of the steps"),
        Arm("instance", "oneformer", train={"tasks": "instance"}, step_share=1 / 3, description="instance only, a third of the steps"),
        Arm("panoptic", "oneformer", train={"tasks": "panoptic"}, step_share=1 / 3, description="panoptic only, a third of the steps"),
        Arm("joint-no-contrastive", "oneformer", train={"contrastive_weight": "0"},
            description="joint, without the query-text contrastive loss"),
    ),
}


def build_arm(arm: Arm, weights: str | None = None):
    """The arm's pipeline (config overrides applied), on CPU, in eval mode."""
    from zoo.registry import build_pipeline, variant_config
    from zoo.weights import load_weights

    pipeline = build_pipeline(arm.model, config=variant_config(arm.model, arm.variant, arm.config))
    if weights is not None:
        load_weights(pipeline, weights)
    return pipeline.eval()


def train_arm(arm: Arm, steps: int, seed: int, out: Path, common: dict[str, str] | None = None) -> dict[str, Any]:
    """Train one arm through the card's first stage; returns its metrics and where its weights are.
    `common`: training-config overrides for every arm of the suite (e.g. a larger validation split);
    the arm's own overrides win over them."""
    from zoo.registry import get_card
    from zoo.training import Trainer
    from zoo.weights import save_weights

    card = get_card(arm.model)
    stage_name = arm.stage or next(iter(card.train_stages))
    stage = card.train_stages[stage_name]
    arm_steps = max(1, round(steps * arm.step_share))
    config = stage.config_cls()
    config = config.override({k: str(v) for k, v in stage.variant_defaults.get(arm.variant, {}).items()})
    config = config.override({**(common or {}), **arm.train, "steps": str(arm_steps)})
    pipeline = build_arm(arm)
    torch.manual_seed(seed)
    task = stage.build_task(pipeline.model, "synthetic", config, seed, out)
    started = time.time()
    result = Trainer(task, out, seed=seed, progress=False,
                     run_info={"model": arm.model, "variant": arm.variant, "arm": arm.name}).fit()
    seconds = time.time() - started
    metadata = {"model": arm.model, "variant": arm.variant, "arm": arm.name, "seed": seed,
                "config_overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in arm.config.items()},
                "train_config": config.to_dict(), "metrics": result.metrics, "steps": result.steps_done,
                "seconds": round(seconds, 1)}
    path = save_weights(result.module, out / "model.safetensors", metadata)
    return {"weights": str(path), "steps": result.steps_done, "seconds": round(seconds, 1), "metrics": result.metrics}


def reuse_arm(arm: Arm, run: Path) -> dict[str, Any]:
    """An arm taken from a finished `zoo train` run (same model and variant)."""
    meta = json.loads((run / "model.json").read_text())
    if (meta.get("model"), meta.get("variant")) != (arm.model, arm.variant):
        raise SystemExit(f"--reuse {arm.name}={run}: that run trained {meta.get('model')}/{meta.get('variant')}, "
                         f"the arm needs {arm.model}/{arm.variant}")
    return {"weights": str(run / "model.safetensors"), "steps": meta.get("steps"), "seconds": meta.get("seconds"),
            "metrics": meta.get("metrics", {}), "reused": meta.get("command", str(run))}


def lower_threshold_metrics(arm: Arm, run: dict[str, Any], threshold: float = 0.4) -> dict[str, float]:
    """OneFormer arms again at a lower `object_mask_threshold` than the official 0.8: a CPU-sized
    model's thing classes rarely reach 0.8, which leaves PQ on things at 0 whatever else it learnt.
    Same held-out scenes (the run's own procedural val split)."""
    if arm.model != "oneformer":
        return {}
    from zoo.data.coco import CocoPanoptic
    from zoo.models.oneformer.train import evaluate_segmentation

    root = Path(run["weights"]).parent / "data" / "shapes"
    if not (root / "annotations" / "panoptic_val.json").is_file():
        return {}
    val = CocoPanoptic(root / "images", root / "annotations" / "panoptic_val.json", root / "annotations" / "panoptic_val")
    pipeline = build_arm(arm, run["weights"])
    metrics = evaluate_segmentation(pipeline.model, val, object_mask_threshold=threshold)
    return {f"{k}@{threshold}": float(metrics[k]) for k in ("pq", "pq_things", "pq_stuff")}


def arm_latency(arms: list[Arm], runs: dict[str, dict[str, Any]], budget_s: float) -> dict[str, Any]:
    """Median latency of each arm's first graph at batch 1, interleaved (one thread)."""
    contenders = {}
    for arm in arms:
        pipeline = build_arm(arm, runs[arm.name]["weights"])
        spec = pipeline.graph_specs()[0]
        inputs = spec.example_inputs({"batch": 1})
        module = spec.module.eval()

        def call(module=module, inputs=inputs) -> None:
            with torch.inference_mode():
                module(*inputs)

        contenders[arm.name] = call
    timings = measure_interleaved(contenders, warmup=2, min_reps=10, max_reps=40, budget_s=budget_s)
    return {name: timing.summary() for name, timing in timings.items()}


# ------------------------------------------------------------------ arms x seeds, shared by the family suites


def seed_folder(out: Path, arm: Arm, seed: int) -> Path:
    """OUT/ARM/seedN, the family suites' layout (a '+' in an arm's name is spelt 'plus-' on disk)."""
    return out / arm.name.replace("+", "plus-") / f"seed{seed}"


def finished_run(folder: Path, steps: int | None = None) -> dict[str, Any] | None:
    """The run finished earlier in `folder` (its model.json), None if there is none; with `steps`, a run of
    another length is refused (a suite picks finished runs up after a stop, never runs of another budget)."""
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if steps is not None and meta.get("steps") != steps:
        raise SystemExit(f"{folder} holds a finished {meta.get('steps')}-step run, this ablation trains {steps}: "
                         "remove it or pass --out elsewhere")
    return {"weights": str(folder / "model.safetensors"), "metrics": meta.get("metrics", {}), "seconds": meta.get("seconds"),
            "steps": meta.get("steps")}


def _train_job(job: tuple[Arm, int, int, str, dict[str, str]]) -> tuple[str, int, dict[str, Any]]:
    arm, steps, seed, folder, common = job
    torch.set_num_threads(1)  # one arm per core
    done = finished_run(Path(folder), max(1, round(steps * arm.step_share)))
    return arm.name, seed, done if done is not None else train_arm(arm, steps, seed, Path(folder), common)


def train_seeds(arms: tuple[Arm, ...] | list[Arm], steps: int, seeds: list[int], out: Path, workers: int = 1,
                common: dict[str, str] | None = None, folder: Callable[[Path, Arm, int], Path] = seed_folder,
                ) -> dict[str, dict[int, dict[str, Any]]]:
    """Every arm once per seed (seed by seed), `workers` runs at a time in their own processes (1: here);
    finished runs in their folders are picked up. `common`: training overrides for every arm (an arm's own win)."""
    jobs = [(arm, steps, seed, str(folder(out, arm, seed)), dict(common or {})) for seed in seeds for arm in arms]
    runs: dict[str, dict[int, dict[str, Any]]] = {arm.name: {} for arm in arms}

    def record(name: str, seed: int, run: dict[str, Any]) -> None:
        runs[name][seed] = run
        log(f"[{name} seed {seed}] {run.get('seconds')} s {({k: round(v, 4) for k, v in run['metrics'].items() if isinstance(v, float)})}")

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for name, seed, run in pool.map(_train_job, jobs):
                record(name, seed, run)
    else:
        for job in jobs:
            record(*_train_job(job))
    return runs


def collect_seeds(arms: tuple[Arm, ...] | list[Arm], seeds: list[int], out: Path,
                  folder: Callable[[Path, Arm, int], Path] = seed_folder) -> dict[str, dict[int, dict[str, Any]]]:
    """The runs that finished under OUT (e.g. of a suite stopped early), arm -> seed -> run."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in arms:
        for seed in seeds:
            done = finished_run(folder(out, arm, seed))
            if done is not None:
                runs.setdefault(arm.name, {})[seed] = done
    return runs


def _numeric(run: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in run["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def seed_summary(arms: tuple[Arm, ...] | list[Arm], runs: dict[str, dict[int, dict[str, Any]]], steps: int, seeds: list[int],
                 **extra: Any) -> dict[str, Any]:
    """Per arm: every run (by seed) and each metric's mean ± sample std over the seeds that finished; per arm
    after the first, the paired per-seed differences from the first (the suite's reference configuration)."""
    result: dict[str, Any] = {"steps": steps, "seeds": seeds, **extra, "arms": [], "paired": {}}
    for arm in arms:
        done = runs.get(arm.name, {})
        keys = sorted({k for r in done.values() for k in _numeric(r)})
        result["arms"].append({**dataclasses.asdict(arm), "config": {k: str(v) for k, v in arm.config.items()},
                               "runs": {str(s): r for s, r in done.items()},
                               "summary": {k: mean_std(_numeric(r).get(k) for r in done.values()) for k in keys}})
    reference = runs.get(arms[0].name, {}) if arms else {}
    for arm in arms[1:]:
        done = runs.get(arm.name, {})
        both = [s for s in seeds if s in done and s in reference]
        keys = sorted({k for s in both for k in _numeric(done[s])} & {k for s in both for k in _numeric(reference[s])})
        result["paired"][f"{arm.name} minus {arms[0].name}"] = {
            k: mean_std(_numeric(done[s]).get(k, float("nan")) - _numeric(reference[s]).get(k, float("nan")) for s in both) for k in keys}
    return result


def arm_folder(root: Path, suite: str, arm: Arm, seed: int) -> Path:
    """OUT/SUITE/ARM for seed 0 (the layout single-seed runs always had), OUT/SUITE/ARM-sN for the others."""
    return root / suite / (arm.name if seed == 0 else f"{arm.name}-s{seed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--steps", type=int, default=600, help="training steps of a full arm (a single-task OneFormer arm gets a third)")
    parser.add_argument("--seed", type=int, default=0, help="one seed (see --seeds)")
    parser.add_argument("--seeds", type=seed_list, default="", help="comma-separated seeds, e.g. 0,1,2: every arm trains once per seed and the table "
                        "reports mean ± sample std and each arm's paired difference from the first arm")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"),
                        help="where the arms' runs go (OUT/SUITE/ARM for seed 0, OUT/SUITE/ARM-sN for seed N); finished ones are picked up")
    parser.add_argument("--reuse", action="append", default=[], metavar="ARM=RUN", help="take an arm (its first seed) from a finished zoo train run")
    parser.add_argument("--arms", default="", help="comma-separated subset of the suite's arms")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="common",
                        help="a training-config override for every arm (e.g. val_images=128); an arm's own overrides win")
    parser.add_argument("--latency-budget-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    threads = pin_threads(args.threads)
    seeds = args.seeds or [args.seed]
    arms = [a for a in SUITES[args.suite] if not args.arms or a.name in args.arms.split(",")]
    reuse = dict(item.split("=", 1) for item in args.reuse)
    common = dict(item.split("=", 1) for item in args.common)
    unknown = set(reuse) - {a.name for a in arms}
    if unknown:
        parser.error(f"--reuse names unknown arms: {', '.join(sorted(unknown))}")
    runs: dict[str, dict[int, dict[str, Any]]] = {arm.name: {} for arm in arms}
    for seed in seeds:
        for arm in arms:
            tag = f"[{arm.name} seed {seed}]"
            if arm.name in reuse and seed == seeds[0]:
                runs[arm.name][seed] = reuse_arm(arm, Path(reuse[arm.name]))
                log(f"{tag} reused {reuse[arm.name]}")
                continue
            out = arm_folder(args.out, args.suite, arm, seed)
            done = finished_run(out, max(1, round(args.steps * arm.step_share)))
            if done is not None:
                runs[arm.name][seed] = done
                log(f"{tag} finished earlier in {out}")
                continue
            log(f"{tag} training {arm.model}/{arm.variant} {arm.description}")
            runs[arm.name][seed] = train_arm(arm, args.steps, seed, out, common)
            log(f"{tag} {runs[arm.name][seed]['seconds']} s: {runs[arm.name][seed]['metrics']}")
    for arm in arms:
        for seed in seeds:
            run = runs[arm.name][seed]
            run["metrics"] = {**run["metrics"], **lower_threshold_metrics(arm, run)}
    latency = arm_latency(arms, {arm.name: runs[arm.name][seeds[0]] for arm in arms}, args.latency_budget_s)

    command = "python -m zoo.bench.ablation " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    # several seeds: a name of its own, so a same-day single-seed document (or another budget) is not overwritten
    name = f"ablation-{args.suite}" if len(seeds) == 1 else f"ablation-{args.suite}-{len(seeds)}seeds-{args.steps}steps"
    document = new_document(name, quick=False, machine=machine_info(threads), command=command,
                            steps=args.steps, seed=seeds[0], seeds=seeds, common_overrides=common)
    spread = seed_summary(arms, runs, args.steps, seeds)
    summary = {a["name"]: a["summary"] for a in spread["arms"]}
    # "metrics" etc. of the first seed at the top of each arm, as single-seed documents always had them
    document["arms"] = [{**dataclasses.asdict(arm), **runs[arm.name][seeds[0]], "latency_batch1": latency[arm.name],
                         "seeds": {str(s): runs[arm.name][s] for s in seeds}, "summary": summary[arm.name]} for arm in arms]
    document["paired"] = spread["paired"]
    path = write_document(document, args.results)
    names = sorted({k for arm in arms for k in summary[arm.name]})
    rows = [[arm.name, runs[arm.name][seeds[0]]["steps"], *[_spread(summary[arm.name].get(k)) for k in names],
             latency[arm.name]["median_ms"]] for arm in arms]
    print(format_table(rows, ["arm", "steps", *names, "latency ms (b1)"]))
    if len(seeds) > 1:
        for pair, metrics in spread["paired"].items():
            print(f"{pair} (paired over seeds {seeds}): " + ", ".join(f"{k} {_spread(v)}" for k, v in metrics.items()))
    log(f"wrote {path}")
    return 0


def _spread(stats: dict[str, Any] | None) -> Any:
    """`mean` for one seed, `mean ± std` for several."""
    if not stats or not stats["n"]:
        return "-"
    return _fmt(stats["mean"]) if stats["n"] == 1 else f"{stats['mean']:.4g} ± {stats['std']:.2g}"


def _fmt(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    raise SystemExit(main())
