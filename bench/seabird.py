"""SeaBird evidence at CPU size (issue #17): the paper's claim as an ablation, and its theory's simple case.

    python -m zoo.bench.seabird theory                                   # closed form + Monte Carlo, plot + JSON
    python -m zoo.bench.seabird ablation --steps 250 --seeds 0,1,2 --workers 3   # dice vs no seg vs L1 seg, AP large / car
    python -m zoo.bench.seabird ablation --steps 100 --init runs/seabird-seg/model.safetensors --tag ft --out runs/seabird-ablation-ft
    python -m zoo.bench.seabird report bench/results/seabird-ablation-cpu-DATE.json

`theory` (paper Sec. 3, Lemma 1 / Theorem 1; official `PanopticBEV/plot/plot_convergence_analysis.py`):
a prediction p of an object's depth z, a target z + eps with eps ~ N(0, sigma^2). The gradient of
the loss with respect to p has variance 1 under L1 (gradient sign(eps)), sigma^2 under L2 (1/2 (p - t)^2),
and erf(l / (sqrt(2) sigma)) / l^2 <= 1/l^2 under dice for an object of length l along depth
(dice of two 1-D boxes of length l shifted by eps is 1 - |eps| / l for |eps| <= l: gradient
sign(eps) / l there, 0 beyond). Closed forms for l = 4 m (car) and 12 m (trailer), sigma 0.02 ... 3.1,
beside a Monte Carlo estimate: autograd gradients of the three losses on sampled eps, the dice one
computed on a 1 cm BEV grid with a soft-edged predicted box (not the formula).

`ablation`: the same micro detector (the card's `detection` stage, one joint run from scratch) with
the BEV segmentation trained by dice (SeaBird), by L1 regression on the probabilities, or absent
(the detector sees zeros instead of the occupancy), on procedural KITTI-format scenes (256 train,
100 held-out val), each over the seeds; KITTI R40 AP in BEV and 3D for large objects and cars.
Every run is `zoo train seabird --variant micro --stage detection --set seg_loss=MODE` (the micro detection
defaults: AdamW 2e-3, batch 8), one process and one thread per seed.

Writes bench/results/seabird-<suite>-cpu-<date>.json (+ the theory plot PNG); mean +- sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.bench.common import mean_std, seed_list

RESULTS_DIR = Path(__file__).parent / "results"
LENGTHS = (4.0, 12.0)
MODES = ("dice", "none", "l1")
KEYS = ("APBEV@0.25/Large", "AP3D@0.25/Large", "APBEV@0.5/Large", "APBEV@0.25/Car", "AP3D@0.25/Car", "AP3D@0.5/Car",
        "segIoU/Large", "segIoU/Car")


def closed_form(sigma: np.ndarray) -> dict[str, list[float]]:
    out = {"L1": [1.0] * len(sigma), "L2": (sigma**2).tolist()}
    for length in LENGTHS:
        out[f"dice l={length:g}m"] = [math.erf(length / (math.sqrt(2) * s)) / length**2 for s in sigma]
    return out


def _dice_gradients(eps: torch.Tensor, length: float, spacing: float = 0.01) -> torch.Tensor:
    """d(1 - dice)/dp at p = 0 for a soft-edged predicted 1-D box [p, p + l] against the target box
    [eps, eps + l], both rasterised on a grid of `spacing` metres (autograd, no formula)."""
    span = length + 8 * float(eps.abs().max()) + 1
    grid = torch.arange(-span, span + length, spacing)
    p = torch.zeros(len(eps), requires_grad=True)
    pred = torch.clamp(torch.minimum(grid[None] - p[:, None], p[:, None] + length - grid[None]) / spacing + 0.5, 0, 1)
    target = ((grid[None] >= eps[:, None]) & (grid[None] < eps[:, None] + length)).float()
    dice = (2 * (pred * target).sum(1)) / (pred.sum(1) + target.sum(1))
    (1 - dice).sum().backward()
    assert p.grad is not None
    return p.grad


def monte_carlo(sigma: np.ndarray, samples: int, seed: int) -> dict[str, list[float]]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[float]] = {"L1": [], "L2": []}
    for length in LENGTHS:
        out[f"dice l={length:g}m"] = []
    for s in sigma:
        eps = torch.randn(samples, generator=gen, dtype=torch.float64).float() * float(s)
        p = torch.zeros(samples, requires_grad=True)
        (p - eps).abs().sum().backward()
        assert p.grad is not None
        out["L1"].append(float(p.grad.var()))
        p = torch.zeros(samples, requires_grad=True)
        (0.5 * (p - eps) ** 2).sum().backward()
        assert p.grad is not None
        out["L2"].append(float(p.grad.var()))
        for length in LENGTHS:
            grads = torch.cat([_dice_gradients(chunk, length) for chunk in eps.split(500)])
            out[f"dice l={length:g}m"].append(float(grads.var()))
    return out


def theory(samples: int, seed: int, results: Path) -> dict[str, Any]:
    sigma = np.round(np.geomspace(0.02, 3.1, 16), 4)
    exact, mc = closed_form(sigma), monte_carlo(sigma, samples, seed)
    worst = max(abs(m - e) / e for k in exact for m, e in zip(mc[k], exact[k]) if e > 1e-9)
    doc = {"suite": "theory", "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python -m zoo.bench.seabird", *sys.argv[1:]]),
           "sigma": sigma.tolist(), "closed_form": exact, "monte_carlo": mc, "samples": samples, "seed": seed,
           "max_relative_difference": worst}
    date = doc["date"]
    png = results / f"seabird-theory-{date}.png"
    _plot(sigma, exact, mc, png)
    doc["plot"] = str(png.relative_to(results.parent.parent)) if results.is_relative_to(results.parent.parent) else str(png)
    path = results / f"seabird-theory-cpu-{date}.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path} and {png}; largest relative difference Monte Carlo vs closed form: {worst:.3f}")
    for k in exact:
        print(f"  {k:14s} sigma=0.5: exact {np.interp(0.5, sigma, exact[k]):.4f}   sigma=3.1: exact {exact[k][-1]:.4f}  MC {mc[k][-1]:.4f}")
    return doc


def _plot(sigma: np.ndarray, exact: dict[str, list[float]], mc: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for (name, values), colour in zip(exact.items(), ("tab:red", "tab:orange", "tab:blue", "tab:green")):
        ax.plot(sigma, values, color=colour, label=f"{name} (closed form)")
        ax.plot(sigma, mc[name], "o", color=colour, markersize=4, label=f"{name} (Monte Carlo)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("depth noise sigma (m)")
    ax.set_ylabel("variance of the loss gradient")
    ax.set_title("SeaBird Lemma 1: gradient variance under depth noise")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _run(mode: str, seed: int, steps: int, out: Path, extra: list[str], batch: int = 8) -> dict[str, float]:
    run = out / f"{mode}-s{seed}"
    if (run / "model.json").is_file():
        return json.loads((run / "model.json").read_text()).get("metrics", {})
    zoo = Path(sys.executable).parent / "zoo"
    cmd = [str(zoo), "train", "seabird", "--variant", "micro", "--stage", "detection", "--steps", str(steps), "--seed", str(seed),
           "--set", f"seg_loss={mode}", "--set", "val_scenes=100", "--set", "train_scenes=256", "--set", f"batch_size={batch}",
           "--set", "ckpt_every=100000", "--out", str(run), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((run / "model.json").read_text()).get("metrics", {})


def summarise(runs: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for mode, by_seed in runs.items():
        table[mode] = {}
        for key in KEYS:
            values = [float(m[key]) for m in by_seed.values() if key in m]
            if values:
                table[mode][key] = mean_std(values)
    return table


def print_table(doc: dict[str, Any]) -> None:
    print(f"{'mode':6s} " + " ".join(f"{k:>17s}" for k in KEYS))
    for mode, row in doc["table"].items():
        print(f"{mode:6s} " + " ".join(f"{row[k]['mean'] * 100:8.2f}±{row[k]['std'] * 100:<7.2f}" if k in row else f"{'-':>17s}" for k in KEYS))


def _seed_runs(job: tuple[int, int, Path, list[str], int]) -> tuple[int, dict[str, dict[str, float]]]:
    seed, steps, out, extra, batch = job
    got = {}
    for mode in MODES:
        got[mode] = _run(mode, seed, steps, out, extra, batch)
        print(f"  {mode} seed {seed}: " + ", ".join(f"{k} {got[mode].get(k, float('nan')):.3f}" for k in KEYS[:6]), flush=True)
    return seed, got


def ablation(steps: int, seeds: list[int], out: Path, results: Path, extra: list[str], batch: int = 8, workers: int = 1,
             tag: str = "") -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    runs: dict[str, dict[int, dict[str, float]]] = {m: {} for m in MODES}
    started = time.time()
    jobs = [(seed, steps, out, extra, batch) for seed in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for seed, got in pool.map(_seed_runs, jobs):
            for mode in MODES:
                runs[mode][seed] = got[mode]
    doc = {"suite": "ablation", "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python -m zoo.bench.seabird", *sys.argv[1:]]),
           "steps": steps, "seeds": seeds, "batch_size": batch, "workers": workers, "train_scenes": 256, "val_scenes": 100, "wall_s": round(time.time() - started),
           "threads": 1, "extra_args": extra, "runs": {m: {str(s): v for s, v in r.items()} for m, r in runs.items()}, "table": summarise(runs)}
    path = results / f"seabird-ablation{'-' + tag if tag else ''}-cpu-{doc['date']}.json"
    path.write_text(json.dumps(doc, indent=1))
    print_table(doc)
    print(f"wrote {path}")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=("theory", "ablation", "report"))
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3, help="ablation: one process (one thread) per seed")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--samples", type=int, default=4000, help="theory: Monte Carlo samples per sigma")
    parser.add_argument("--out", type=Path, default=Path("runs/seabird-ablation"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--init", default=None, help="ablation: start every arm from these weights (e.g. a stage-1 segmentation run)")
    parser.add_argument("--tag", default="", help="ablation: a name in the results file (seabird-ablation-TAG-cpu-DATE.json)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.suite == "theory":
        theory(args.samples, 0, args.results)
    elif args.suite == "ablation":
        extra = [x for kv in args.set for x in ("--set", kv)] + (["--weights", args.init] if args.init else [])
        ablation(args.steps, args.seeds, args.out, args.results, extra, args.batch, args.workers, args.tag)
    else:
        if args.path is None:
            parser.error("report needs the JSON path")
        print_table(json.loads(args.path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
