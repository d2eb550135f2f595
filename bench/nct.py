"""NCT evidence at CPU size (issue #13): the paper's Table 3 ablation and its central claim, over >= 3 seeds.

    python -m zoo.bench.nct ablation --steps 400 --seeds 0,1,2 --workers 2
    python -m zoo.bench.nct controls --steps 400 --seeds 0,1,2 --workers 2
    python -m zoo.bench.nct collect --out runs/nct-ablation --steps 400
    python -m zoo.bench.nct report bench/results/nct-ablation-DATE.json

`ablation` (on the lowres control: the paper ablates on Canny, but at 32 px and a few hundred CPU steps the
Canny adapter barely moves its consistency, so differences between arms could not resolve there): full NCT; without the noise consistency loss; without
the boundary loss; without primal-dual (lambda fixed at its start value); and the data-trained, multi-step
ControlNet-style baseline on the same frozen base (the card's `controlnet-data` stage: the same adapter,
EDM denoising on images of the base's training distribution, 4 sampling steps). `controls`: full NCT on
the other controls (canny, colour; lowres is the ablation's full arm). Every (arm, seed) is one run of the card's stage through the shared
loop (zoo.bench.ablation.train_arm), scored by its `finalize` on 256 held-out seeds: control consistency of the
adapted generator (mean |c - C(output)|, controls from the base's outputs, generation from independent
noise) beside the unadapted generator's on the same controls, and FID / precision / recall of the adapted
outputs against the base's own (zoo-shapes-classifier-v1 space, as the paper scores against the base).
Then time per image (batch 64, one thread, interleaved): the base, NCT (one step) and the baseline (4 steps).

Writes bench/results/nct-<suite>-<date>.json; tables print mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from zoo.bench.ablation import Arm, build_arm, collect_seeds, seed_summary, train_seeds
from zoo.bench.common import (
    RESULTS_DIR,
    format_table,
    log,
    machine_info,
    measure_interleaved,
    new_document,
    pin_threads,
    seed_list,
    write_document,
)

# CPU-sized runs: the micro defaults (batch 32, lr 1e-3, N = 4 levels, EMA 0.98) and 256 held-out seeds
COMMON = {"eval_samples": "256"}


def suites() -> dict[str, tuple[Arm, ...]]:
    return {
        "ablation": (
            Arm("full", "nct-lowres", description="NCT: noise consistency + boundary loss, primal-dual weighting"),
            Arm("no-consistency", "nct-lowres", train={"consistency_loss": "false"}, description="without the noise consistency loss"),
            Arm("no-boundary", "nct-lowres", train={"boundary_loss": "false"}, description="without the boundary loss"),
            Arm("no-primal-dual", "nct-lowres", train={"primal_dual": "false"}, description="lambda fixed at 1 (no dual steps)"),
            Arm("data-4step", "nct-lowres", stage="controlnet-data",
                description="the same adapter trained on images with the denoising objective, 4 sampling steps"),
        ),
        "controls": tuple(Arm(control, f"nct-{control}", description=f"NCT on the {control} control")
                          for control in ("canny", "colour")),  # lowres: the ablation's "full" arm
    }




def speed(arms: dict[str, Arm], runs: dict[str, dict[int, dict[str, Any]]], budget_s: float = 60.0, batch: int = 64) -> dict[str, Any]:
    """ms per image: the unadapted base, NCT's one step, the data-trained baseline's 4 steps."""
    from zoo.models.nct import extract_control, sample_controlled

    nct = build_arm(arms["full"], runs["full"][min(runs["full"])]["weights"]).model
    data = build_arm(arms["data-4step"], runs["data-4step"][min(runs["data-4step"])]["weights"]).model
    z = torch.randn(batch, *nct.noise_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(batch) % nct.num_classes
    with torch.no_grad():
        control = extract_control(nct.config.control, nct.decode(nct.base_generate(z, labels)))

    def run(fn):
        def call():
            with torch.no_grad():
                return fn()
        return call

    contenders = {
        "base-1step": run(lambda: nct.decode(nct.base_generate(z, labels))),
        "nct-1step": run(lambda: nct.decode(nct.generate(z, control, labels))),
        "data-4step": run(lambda: data.decode(sample_controlled(data, z, control, labels, 4))),
    }
    timings = measure_interleaved(contenders, warmup=1, min_reps=3, max_reps=20, budget_s=budget_s)
    out: dict[str, Any] = {name: {**t.summary(), "ms_per_image": t.summary()["median_ms"] / batch} for name, t in timings.items()}
    out["batch"] = batch
    out["network_calls"] = {"base-1step": 1, "nct-1step": 1, "data-4step": 4}
    return out


def run_suite(suite: str, steps: int, seeds: list[int], workers: int, out: Path, collect_only: bool = False) -> dict[str, Any]:
    chosen = suites()[suite]
    started = time.time()
    runs = collect_seeds(chosen, seeds, out) if collect_only else train_seeds(chosen, steps, seeds, out, workers, COMMON)
    result = seed_summary(chosen, runs, steps, seeds, common=COMMON)
    result["wall_s"] = round(time.time() - started, 1)
    by_name = {a.name: a for a in chosen}
    if suite == "ablation" and runs.get("full") and runs.get("data-4step"):
        result["speed"] = speed(by_name, runs)
    return result


def print_result(result: dict[str, Any]) -> None:
    cols = ["consistency_nct", "consistency_base", "fid_vs_base", "precision", "recall"]

    def cell(arm: dict[str, Any], key: str) -> str:
        s = arm["summary"].get(key)
        return f"{s['mean']:.4f} ± {s['std']:.4f}" if s else "—"

    print(format_table([[a["name"], *[cell(a, k) for k in cols]] for a in result["arms"]], ["arm", *cols]))
    if "speed" in result:
        sp = result["speed"]
        print(format_table([[k, round(sp[k]["ms_per_image"], 3), sp["network_calls"][k]] for k in sp["network_calls"]],
                           ["generator", "ms / image", "network calls"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=("ablation", "controls", "collect", "report"))
    parser.add_argument("path", nargs="?", type=Path, help="report: a results JSON")
    parser.add_argument("--of", default="ablation", choices=("ablation", "controls"), help="collect: which suite's runs")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="run folders (default runs/nct-SUITE)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.suite == "report":
        print_result(json.loads(args.path.read_text()))
        return 0
    seeds = args.seeds
    if len(seeds) < 3:
        log("warning: fewer than 3 seeds; the spread is not evidence")
    suite = args.of if args.suite == "collect" else args.suite
    out = args.out or Path(f"runs/nct-{suite}")
    threads = pin_threads(1)
    command = "python -m zoo.bench.nct " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    document = new_document(f"nct-{suite}", quick=False, machine=machine_info(threads), command=command)
    document.update(run_suite(suite, args.steps, seeds, args.workers, out, collect_only=args.suite == "collect"))
    print_result(document)
    path = write_document(document, args.results)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
