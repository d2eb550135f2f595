"""HF-Diff evidence at CPU size (issue #14), over >= 3 seeds with the spread.

    python -m zoo.bench.hfdiff losses  --weights runs/hfdiff-micro-teacher/model.safetensors --steps 120 --seeds 0,1,2
    python -m zoo.bench.hfdiff quality --weights zoo/models/hfdiff/weights/micro-demo.safetensors --seeds 0,1,2

`losses` (the paper's HF-loss claim at small scale): from the same trained teacher (and pretrained INN),
the one-step student is trained for `--steps` steps with one of three objectives and scored on held-out
pairs; arms differ only in the extra term:
  - `mse`: plain latent MSE of the one-step prediction against the GT latent (SinSR's GT term alone);
  - `hf`: + HF-Diff's 0.2 MSE of INN detail features (loss.hf_perceptual_loss);
  - `vgg-random`: + 0.2 x an LPIPS-style distance on a randomly initialised VGG-16 (timm, no weights),
    on decoded images (the paper's comparison is to trained VGG / LPIPS, which cannot be downloaded here).
To keep nine runs inside a CPU budget the teacher-chain terms of SinSR (x0 of the teacher, inverse x_T) are
left out of all three arms: the comparison isolates the extra loss term. Seeds change the data order,
noise and initial student noise draws; the student starts from the teacher in every run.

`quality`: on the same held-out pairs, bicubic x4, the one-step student and the 15-step teacher of one
weights file, each sampled with 3 noise seeds; PSNR / SSIM on Y (4-pixel border shaved), the wavelet
high-frequency error, and time per image of one 32x32 LR tile through the `sr` graph against the teacher's
15-step chain (interleaved, one thread).

Held-out data: 32 crops of 64x64 GT (bundled photographs + procedural textures, Real-ESRGAN degradation,
seed 10007), written as a paired folder (lq/ + gt/) and read back with zoo.data.paired.PairedFolder.
Writes bench/results/hfdiff-<suite>-<date>.json.
"""

from __future__ import annotations

import argparse
import copy
import time
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

VAL_SEED = 10_007
ARMS = ("mse", "hf", "vgg-random")


def held_out_pairs(folder: Path, count: int = 32, gt_size: int = 64) -> Any:
    """The held-out degraded pairs as a paired folder (lq/NAME.png, gt/NAME.png), read back."""
    from zoo.data._io import write_png
    from zoo.data.degradation import DegradedPairs, bundled_hr_images
    from zoo.data.paired import PairedFolder

    if not (folder / "gt").is_dir() or len(list((folder / "gt").glob("*.png"))) != count:
        pairs = DegradedPairs(bundled_hr_images, gt_size, seed=VAL_SEED, length=count, hflip=False)
        for i in range(count):
            item = pairs[i]
            write_png(folder / "lq" / f"{i:03d}.png", item["lq"].permute(1, 2, 0).numpy())
            write_png(folder / "gt" / f"{i:03d}.png", item["gt"].permute(1, 2, 0).numpy())
    data = PairedFolder(folder)
    lq = torch.stack([data[i]["degraded"] for i in range(len(data))])  # type: ignore[misc]
    gt = torch.stack([data[i]["clean"] for i in range(len(data))])  # type: ignore[misc]
    return lq, gt


def _load(weights: str) -> Any:
    from zoo.registry import create_model

    return create_model("hfdiff", "micro", weights=weights).model




@torch.no_grad()
def one_step(model: Any, lq: torch.Tensor, seed: int) -> torch.Tensor:
    y0 = model.encode_lr(lq)
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full((len(lq),), model.config.steps - 1, dtype=torch.int64)
    return model.codec.decode(model.predict_x0(model.unet, model.schedule.prior_sample(y0, noise), t, model.lq_condition(lq))).clamp(0, 1)


@torch.no_grad()
def teacher(model: Any, lq: torch.Tensor, seed: int) -> torch.Tensor:
    from zoo.models.hfdiff.train import teacher_sample

    gen = torch.Generator().manual_seed(seed)
    y0 = model.encode_lr(lq)
    noise = torch.randn(y0.shape, generator=gen)
    return model.codec.decode(teacher_sample(model, y0, model.lq_condition(lq), noise, gen)).clamp(0, 1)


def train_arm(base: Any, arm: str, seed: int, steps: int, batch: int, lr: float) -> Any:
    """The student from the teacher, `steps` Adam steps of latent MSE + the arm's term."""
    import torch.nn.functional as F

    from zoo.data.degradation import DegradedPairs, bundled_hr_images
    from zoo.diffusion.perceptual import FeatureDistance, TimmFeatures
    from zoo.models.hfdiff.loss import hf_perceptual_loss

    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    model.unet.load_state_dict(model.teacher.state_dict())
    model.requires_grad_(False)
    model.unet.requires_grad_(True)
    vgg = FeatureDistance(TimmFeatures("vgg16", out_indices=(1, 2, 3))).eval().requires_grad_(False) if arm == "vgg-random" else None
    data = DegradedPairs(bundled_hr_images, 64, seed=seed, length=steps * batch)
    opt = torch.optim.Adam(model.unet.parameters(), lr=lr)
    last = model.config.steps - 1
    for step in range(steps):
        items = [data[step * batch + i] for i in range(batch)]
        lq, gt = torch.stack([it["lq"] for it in items]), torch.stack([it["gt"] for it in items])
        with torch.no_grad():
            y0, z_gt = model.encode_lr(lq), model.codec.encode(gt)
        t = torch.full((batch,), last, dtype=torch.int64)
        pred = model.predict_x0(model.unet, model.schedule.prior_sample(y0, torch.randn_like(y0)), t, model.lq_condition(lq))
        loss = F.mse_loss(pred, z_gt)
        if arm == "hf":
            loss = loss + hf_perceptual_loss(model.inn, pred, z_gt)
        elif vgg is not None:
            loss = loss + 0.2 * vgg(model.codec.decode(pred), gt).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 40 == 0:
            log(f"  {arm} seed {seed} step {step}: {float(loss):.4f}")
    return model.eval()


def losses(weights: str, seeds: list[int], steps: int, batch: int, lr: float, data: Path) -> dict[str, Any]:
    from zoo.metrics.image import sr_metrics

    base = _load(weights)
    if not (base.is_ready("teacher") and base.is_ready("inn")):
        raise SystemExit(f"{weights}: needs a trained teacher and a pretrained INN (zoo train hfdiff --stage teacher)")
    lq, gt = held_out_pairs(data)
    runs: dict[str, dict[int, dict[str, float]]] = {a: {} for a in ARMS}
    for seed in seeds:
        for arm in ARMS:
            start = time.time()
            model = train_arm(base, arm, seed, steps, batch, lr)
            runs[arm][seed] = {**sr_metrics(one_step(model, lq, seed), gt), "train_seconds": round(time.time() - start, 1)}
            log(f"{arm} seed {seed}: {runs[arm][seed]}")
    summary = {arm: {k: mean_std([runs[arm][s][k] for s in seeds]) for k in ("hf_error", "psnr_y", "ssim_y")} for arm in ARMS}
    diffs = {f"{a}-hf": mean_std([runs[a][s]["hf_error"] - runs["hf"][s]["hf_error"] for s in seeds]) for a in ("mse", "vgg-random")}
    return {"settings": {"weights": weights, "steps": steps, "batch": batch, "lr": lr, "seeds": seeds, "val_images": len(lq)},
            "runs": runs, "summary": summary, "paired_hf_error_differences": diffs}


def quality(weights: str, seeds: list[int], data: Path, budget_s: float) -> dict[str, Any]:
    import torch.nn.functional as F

    from zoo.metrics.image import sr_metrics

    model = _load(weights).eval()
    lq, gt = held_out_pairs(data)
    bicubic = sr_metrics(F.interpolate(lq, scale_factor=4.0, mode="bicubic").clamp(0, 1), gt)
    per: dict[str, dict[int, dict[str, float]]] = {"one-step": {}, "teacher": {}}
    for seed in seeds:
        per["one-step"][seed] = sr_metrics(one_step(model, lq, seed), gt)
        per["teacher"][seed] = sr_metrics(teacher(model, lq, seed), gt)
        log(f"seed {seed}: one-step {per['one-step'][seed]} teacher {per['teacher'][seed]}")
    summary = {name: {k: mean_std([per[name][s][k] for s in seeds]) for k in ("hf_error", "psnr_y", "ssim_y")} for name in per}
    tile = lq[:1, :, :16, :16].repeat(1, 1, 2, 2)  # one 32x32 LR tile
    timing = measure_interleaved({"one-step": lambda: one_step(model, tile, 0), "teacher-15": lambda: teacher(model, tile, 0)},
                                 budget_s=budget_s)
    times = {k: v.median_ms / 1000.0 for k, v in timing.items()}
    return {"settings": {"weights": weights, "seeds": seeds, "val_images": len(lq)}, "bicubic": bicubic, "runs": per,
            "summary": summary, "seconds_per_tile": times, "speedup": times["teacher-15"] / times["one-step"]}


def _print(suite: str, result: dict[str, Any]) -> None:
    if suite == "losses":
        rows = [[arm, *(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in ("hf_error", "psnr_y", "ssim_y"))]
                for arm, s in result["summary"].items()]
        print(format_table(rows, ["arm", "HF error", "PSNR-Y", "SSIM-Y"]))
        for name, d in result["paired_hf_error_differences"].items():
            print(f"HF error {name}: {d['mean']:+.5f} ± {d['std']:.5f} (per seed {', '.join(f'{v:+.5f}' for v in d['values'])})")
    else:
        b = result["bicubic"]
        rows = [["bicubic", f"{b['hf_error']:.4f}", f"{b['psnr_y']:.2f}", f"{b['ssim_y']:.4f}"]]
        rows += [[name, *(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in ("hf_error", "psnr_y", "ssim_y"))]
                 for name, s in result["summary"].items()]
        print(format_table(rows, ["method", "HF error", "PSNR-Y", "SSIM-Y"]))
        print(f"time per 32x32 LR tile: {result['seconds_per_tile']}, one-step x{result['speedup']:.1f} faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=("losses", "quality"))
    parser.add_argument("--weights", required=True)
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--data", type=Path, default=Path("runs/hfdiff-bench-data"))
    parser.add_argument("--budget-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    threads = pin_threads(args.threads)
    seeds = args.seeds
    if args.suite == "losses":
        result = losses(args.weights, seeds, args.steps, args.batch, args.lr, args.data)
    else:
        result = quality(args.weights, seeds, args.data, args.budget_s)
    doc = new_document(f"hfdiff-{args.suite}", quick=False, machine=machine_info(threads))
    doc.update(result)
    path = write_document(doc, args.results)
    _print(args.suite, result)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
