"""sLCT evidence at CPU size (issue #12): the paper's claims as measurements over >= 3 seeds.

    python -m zoo.bench.lct tails                       # latents are heavy-tailed, pixels are not
    python -m zoo.bench.lct ablation --steps 1000 --seeds 0,1,2 --workers 2 --set ema_decay=0.99
    python -m zoo.bench.lct collect --out runs/lct-ablation --steps 1000   # the runs that finished, if stopped early
    python -m zoo.bench.lct report bench/results/lct-ablation-DATE.json

`tails`: excess kurtosis and tail mass (share of values beyond 4 and 6 standard deviations,
99.9th-percentile |z|) of the bundled micro-f4 autoencoder's standardised latents against the
pixels of the same images, per seed (held-out procedural shapes). The paper motivates the Cauchy
loss with such impulsive outliers in latents (its box plots).

`ablation`: the paper's table at small scale. Each arm adds one technique to the one before,
as the paper's ablation does: iCT (Pseudo-Huber, fixed c) -> Cauchy loss -> early-timestep
diffusion loss -> OT coupling -> adaptive c (= sLCT) -> NsLN final norm; plus the multi-step
diffusion baseline (EDM objective on the same network, Heun sampler, 18 levels = 35 network
calls). Every (arm, seed) is one `zoo train lct --variant micro` run through the card's stage
(zoo.bench.ablation.train_arm), scored by its `finalize`: FID / KID / precision / recall of 512
samples against 512 held-out images in zoo-shapes-classifier-v1 feature space, at 1 and 2
steps (the baseline at its 18 levels). Then time per image of one-step sLCT against the
baseline, measured interleaved on the trained models (batch 64, one thread). Runs go in
parallel worker processes, one thread each.

Writes bench/results/lct-<suite>-<date>.json; the table prints mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.bench.ablation import Arm, build_arm, collect_seeds, seed_summary, train_seeds
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

ICT = {"loss": "pseudo-huber", "diffusion_loss_weight": "0", "ot_coupling": "false", "adaptive_c": "false"}


def _nsln_config() -> dict[str, Any]:
    from zoo.registry import variant_config

    net = variant_config("lct", "micro").net
    return {"net": dataclasses.replace(net, out_norm="nonscaling")}


def arms() -> tuple[Arm, ...]:
    """Each technique added in turn (the paper's ablation order), then the diffusion baseline."""
    return (
        Arm("ict", "lct", train=dict(ICT), description="iCT in latent space: Pseudo-Huber loss, fixed c"),
        Arm("+cauchy", "lct", train={**ICT, "loss": "cauchy"}, description="+ Cauchy loss"),
        Arm("+diffusion", "lct", train={**ICT, "loss": "cauchy", "diffusion_loss_weight": "5"},
            description="+ diffusion loss at early timesteps (weight 5)"),
        Arm("+ot", "lct", train={**ICT, "loss": "cauchy", "diffusion_loss_weight": "5", "ot_coupling": "true"},
            description="+ minibatch OT coupling"),
        Arm("+adaptive-c", "lct", train={}, description="+ adaptive c = sLCT (the card's defaults)"),
        Arm("+nsln", "lct", config=_nsln_config(), description="+ Non-scaling LayerNorm as the final norm"),
        Arm("edm", "lct", config={"parametrisation": "edm"},
            description="multi-step diffusion baseline: EDM objective on the same network, Heun 18 levels"),
    )


# ------------------------------------------------------------------------------------ tails


def _tail_stats(values: np.ndarray) -> dict[str, float]:
    z = (values - values.mean()) / values.std()
    return {"excess_kurtosis": float((z ** 4).mean() - 3.0), "beyond_4sd": float((np.abs(z) > 4).mean()),
            "beyond_6sd": float((np.abs(z) > 6).mean()), "abs_z_q999": float(np.quantile(np.abs(z), 0.999)),
            "max_abs_z": float(np.abs(z).max())}


def tails(seeds: list[int], images: int, autoencoder: str | None = None) -> dict[str, Any]:
    from zoo.data.generation import ClassImageSet
    from zoo.diffusion.autoencoder import load_autoencoder
    from zoo.registry import create_model

    codec = (load_autoencoder(autoencoder) if autoencoder else create_model("autoencoder-kl", "micro-f4").model).eval()
    per_seed = []
    for seed in seeds:
        data = ClassImageSet("shapes", size=32, count=images, seed=1000 + seed, split="test")
        pixels, _ = data.tensors()
        with torch.inference_mode():
            latents = torch.cat([codec.encode(pixels[i:i + 256]) for i in range(0, len(pixels), 256)])
        lat = latents.numpy()
        row = {"seed": seed, "pixels": _tail_stats(pixels.numpy().ravel()), "latents": _tail_stats(lat.ravel()),
               "latent_channels": [_tail_stats(lat[:, c].ravel()) for c in range(lat.shape[1])]}
        per_seed.append(row)
        log(f"[tails seed {seed}] pixels kurtosis {row['pixels']['excess_kurtosis']:.2f}, latents {row['latents']['excess_kurtosis']:.2f}")
    return {"images_per_seed": images, "seeds": per_seed, "summary": {
        space: {key: mean_std([r[space][key] for r in per_seed]) for key in per_seed[0][space]} for space in ("pixels", "latents")}}


# ------------------------------------------------------------------------------------ ablation




def speed(runs: dict[str, dict[int, dict[str, Any]]], all_arms: tuple[Arm, ...], budget_s: float, batch: int = 64) -> dict[str, Any]:
    """Seconds per image: one-step (and two-step) sLCT against the diffusion baseline, interleaved."""
    by_name = {a.name: a for a in all_arms}
    seed = sorted(runs["+adaptive-c"])[0]
    slct = build_arm(by_name["+adaptive-c"], runs["+adaptive-c"][seed]["weights"])
    edm = build_arm(by_name["edm"], runs["edm"][seed]["weights"])
    seeds = list(range(batch))
    contenders = {
        "slct-1step": lambda: slct.generate(seeds, 1),
        "slct-2step": lambda: slct.generate(seeds, 2),
        "edm-heun-18": lambda: edm.generate(seeds, edm.config.default_steps),
    }
    timings = measure_interleaved(contenders, warmup=1, min_reps=3, max_reps=20, budget_s=budget_s)
    out = {name: {**t.summary(), "ms_per_image": t.summary()["median_ms"] / batch} for name, t in timings.items()}
    out["batch"] = batch
    out["network_calls"] = {"slct-1step": 1, "slct-2step": 2, "edm-heun-18": edm.network_calls(edm.config.default_steps)}
    return out


def collect(out: Path, steps: int, seeds: list[int]) -> dict[str, Any]:
    """The finished runs under OUT (ARM/seedS/model.json), e.g. of a suite stopped early."""
    chosen = arms()
    runs = collect_seeds(chosen, seeds, out)
    result = seed_summary(tuple(a for a in chosen if a.name in runs), runs, steps, seeds)
    if {"+adaptive-c", "edm"} <= set(runs):
        result["speed"] = speed(runs, chosen, budget_s=60.0)
    return result


def ablation(steps: int, seeds: list[int], workers: int, out: Path, only: set[str], common: dict[str, str]) -> dict[str, Any]:
    """`common`: training overrides every arm gets (`--set`, e.g. the codec or the EMA rate; an arm's own win)."""
    chosen = tuple(a for a in arms() if not only or a.name in only)
    started = time.time()
    runs = train_seeds(chosen, steps, seeds, out, workers, common)
    result = seed_summary(chosen, runs, steps, seeds)
    result["wall_s"] = round(time.time() - started, 1)
    if {"+adaptive-c", "edm"} <= set(runs):
        result["speed"] = speed(runs, chosen, budget_s=60.0)
    return result


def print_ablation(result: dict[str, Any]) -> None:
    cols = ["fid_1step", "fid_2step", "precision_1step", "recall_1step", "fid_18step", "precision_18step", "recall_18step"]
    cols = [c for c in cols if any(c in a["summary"] for a in result["arms"])]

    def cell(arm: dict[str, Any], key: str) -> str:
        s = arm["summary"].get(key)
        return f"{s['mean']:.2f} ± {s['std']:.2f}" if s else "—"

    print(format_table([[a["name"], *[cell(a, k) for k in cols]] for a in result["arms"]], ["arm", *cols]))
    if "speed" in result:
        sp = result["speed"]
        print(format_table([[k, sp[k]["ms_per_image"], sp["network_calls"][k]] for k in ("slct-1step", "slct-2step", "edm-heun-18")],
                           ["sampler", "ms / image", "network calls"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=("tails", "ablation", "collect", "report"))
    parser.add_argument("path", nargs="?", type=Path, help="report: a results JSON written by the ablation")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=2048, help="tails: images per seed")
    parser.add_argument("--arms", default="", help="comma-separated subset of the ablation's arms")
    parser.add_argument("--out", type=Path, default=Path("runs/lct-ablation"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ablation: a training override for every arm")
    parser.add_argument("--autoencoder", default=None, help="the codec's weights (default: the bundled autoencoder-kl micro-f4)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.suite == "report":
        print_ablation(json.loads(args.path.read_text()))
        return 0
    seeds = args.seeds
    if len(seeds) < 3:
        log("warning: fewer than 3 seeds; the spread is not evidence")
    threads = pin_threads(1)
    command = "python -m zoo.bench.lct " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    document = new_document(f"lct-{args.suite}", quick=False, machine=machine_info(threads), command=command)
    if args.suite == "tails":
        document.update(tails(seeds, args.images, args.autoencoder))
        for space in ("pixels", "latents"):
            s = document["summary"][space]
            print(f"{space:8s} excess kurtosis {s['excess_kurtosis']['mean']:.2f} ± {s['excess_kurtosis']['std']:.2f}, "
                  f">4 sd {s['beyond_4sd']['mean']:.2e}, >6 sd {s['beyond_6sd']['mean']:.2e}, q99.9 |z| {s['abs_z_q999']['mean']:.2f}, "
                  f"max |z| {s['max_abs_z']['mean']:.1f}")
    elif args.suite == "collect":
        document.update(collect(args.out, args.steps, seeds))
        document["note"] = "collected from the finished runs under " + str(args.out)
        print_ablation(document)
    else:
        only = {a for a in args.arms.split(",") if a}
        common = dict(item.split("=", 1) for item in args.set)
        if args.autoencoder:
            common["autoencoder"] = args.autoencoder
        document.update(ablation(args.steps, seeds, args.workers, args.out, only, common))
        print_ablation(document)
    path = write_document(document, args.results)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
