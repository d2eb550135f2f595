"""InterLCM evidence at CPU size (issue #15): the paper's claim and two inference choices, over 3 seeds.

    python -m zoo.bench.interlcm ablation --seeds 0,1,2                 # the bundled micro demo weights
    python -m zoo.bench.interlcm ablation --weights runs/interlcm/model.safetensors --seeds 0,1,2
    python -m zoo.bench.interlcm ablation --variant micro-128 --arms lq-4 --seeds 0,1,2   # 128-px crops

Arms, all with the same trained networks (one `zoo train` run; see docs/models/interlcm.md):
- `lq-4` (InterLCM): the LQ latent as step 1's x0 estimate, re-noised to t1, UNet + ControlNet at 759, 499, 259;
- `noise-4`: the same networks from pure noise, a UNet call at every one of 999, 759, 499, 259 (the
  paper's "start from noise" ablation);
- `lq-2`: the LQ as the intermediate state with 2 steps (999, 499: one UNet call). The paper trains a
  separate model per step count; here the 4-step-trained networks run at 2 steps;
- `lq-4-nofix`: `lq-4` without the wavelet colour fix;
- `lq input`: the degraded face itself (no restoration), for reference.
Each seed draws its own held-out set (the last 20 lfw_subset faces and 100 procedural faces, degraded with
CodeFormer's pipeline at the micro ranges, the degradation and the procedural faces drawn from the seed)
and its own re-noising noise: 120 faces a seed. Metrics: PSNR and SSIM on RGB against the HQ face, the
LPIPS-form distance in zoo's shapes net (lower is better), seconds per face (one thread, batch 16, eager).
Writes bench/results/interlcm-ablation-cpu-<date>.json; prints mean +- sample std over seeds.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from zoo.bench.common import RESULTS_DIR, format_table, log, machine_info, mean_std, new_document, pin_threads, seed_list, write_document

ARMS = {"lq-4": {"start": "lq", "steps": 4, "colour_fix": True},
        "noise-4": {"start": "noise", "steps": 4, "colour_fix": True},
        "lq-2": {"start": "lq", "steps": 2, "colour_fix": True},
        "lq-4-nofix": {"start": "lq", "steps": 4, "colour_fix": False}}


def ablation(seeds: list[int], weights: str | None = None, faces: int = 120, variant: str = "micro",
             arms: list[str] | None = None) -> dict[str, Any]:
    """`arms` (default all; `lq-4` always runs, the others are measured against it) on each seed's held-out faces,
    degraded at the variant's training ranges."""
    from zoo.diffusion.perceptual import build_perceptual
    from zoo.models.interlcm import CARD, InterLCMTrainConfig, restoration_metrics
    from zoo.models.interlcm.train import face_datasets
    from zoo.registry import create_model

    chosen = {name: ARMS[name] for name in ARMS if name == "lq-4" or arms is None or name in arms}
    pipeline = create_model("interlcm", variant, weights=weights)
    model = pipeline.model.eval()
    recipe = CARD.train_stages["interlcm"].variant_defaults[variant]
    keys = ("blur_sigma", "downsample_range", "eval_items")
    config = InterLCMTrainConfig(**{k: recipe[k] for k in keys if k in recipe})
    perceptual, used = build_perceptual("shapes")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*chosen, "lq input")}
    for seed in seeds:
        _, held, desc = face_datasets("synthetic", model.config.image_size, seed, config, 1, faces)
        for name, arm in chosen.items():
            metrics = restoration_metrics(model, held, steps=arm["steps"], start=arm["start"], colour_fix=arm["colour_fix"],
                                          seed=seed, perceptual=perceptual)
            rows[name].append({k: metrics[k] for k in ("psnr", "ssim", "perceptual", "seconds_per_face")})
            if name == "lq-4":
                rows["lq input"].append({"psnr": metrics["psnr_lq"], "ssim": metrics["ssim_lq"], "perceptual": metrics["perceptual_lq"],
                                         "seconds_per_face": 0.0})
            log(f"seed {seed} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name][-1].items()))
    summary = {name: {k: mean_std(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}
    paired = {}
    for other in [name for name in chosen if name != "lq-4"]:
        diffs = {k: [a[k] - b[k] for a, b in zip(rows["lq-4"], rows[other])] for k in ("psnr", "ssim", "perceptual")}
        paired[f"lq-4 minus {other}"] = {k: {**mean_std(v), "per_seed": v} for k, v in diffs.items()}
    return {"data": desc, "faces_per_seed": faces, "perceptual_net": used, "per_seed": rows, "summary": summary, "paired": paired}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.interlcm")
    parser.add_argument("suite", choices=("ablation",))
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--weights", default=None, help="our weights file (default: the variant's bundled demo weights)")
    parser.add_argument("--variant", default="micro", help="micro (64-px crops) or micro-128")
    parser.add_argument("--arms", default=None, help=f"comma-separated subset of {','.join(ARMS)} (default all)")
    parser.add_argument("--faces", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    threads = pin_threads(args.threads)
    torch.manual_seed(0)
    seeds = args.seeds
    arms = args.arms.split(",") if args.arms else None
    unknown = sorted(set(arms or ()) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
    results = ablation(seeds, args.weights, args.faces, args.variant, arms)
    suite = "interlcm-ablation" if args.variant == "micro" else f"interlcm-ablation-{args.variant}"
    doc = new_document(suite, quick=False, machine=machine_info(threads),
                       settings={"seeds": seeds, "variant": args.variant, "weights": args.weights or f"bundled {args.variant} demo",
                                 "arms": {name: ARMS[name] for name in results["summary"] if name in ARMS}}, results=results)
    path = write_document(doc, args.out)
    table = [[name, *(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in ("psnr", "ssim", "perceptual", "seconds_per_face"))]
             for name, s in results["summary"].items()]
    print(format_table(table, ["arm", "PSNR", "SSIM", "perceptual", "s / face"]))
    for name, p in results["paired"].items():
        print(name + ": " + ", ".join(f"{k} {v['mean']:+.4f} ± {v['std']:.4f}" for k, v in p.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
