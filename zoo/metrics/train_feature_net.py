"""Train `ShapesFeatureNet` (zoo-shapes-classifier-v1) on ClassImageSet labels and ship its weights.

    python -m zoo.metrics.train_feature_net --out zoo/metrics/weights/zoo-shapes-classifier-v1.safetensors

Training data: ClassImageSet "shapes" (6 classes) and "textures" (4 families) from the train
split, rendered at 32 px and at 64 px (downsampled by the net's own resize, so both sizes are
in-distribution), random left-right flips. AdamW with a cosine schedule. Held-out accuracy is
measured on the test split (its own random streams; texture patches from their own source band)
at 32 and 64 px and written into the JSON sidecar with the command, seed and date.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.data.generation import ClassImageSet
from zoo.metrics.feature_net import DEFAULT_WEIGHTS, FEATURE_NET_NAME, FeatureNetConfig, ShapesFeatureNet


def _render(kind: str, size: int, count: int, seed: int, split: str, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (prepared at the net's 32-px input, uint8 to save memory) and joint labels."""
    images, labels = ClassImageSet(kind, size=size, count=count, seed=seed, split=split).tensors()
    if size != 32:
        images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels + offset


def build_set(per_kind: dict[str, int], seed: int, split: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"shapes@32": (x, y), "shapes@64": ..., "textures@32": ..., "textures@64": ...}."""
    out = {}
    offset = {"shapes": 0, "textures": len(ClassImageSet("shapes").classes)}
    for kind, count in per_kind.items():
        for size, sub_seed in ((32, seed), (64, seed + 1)):  # another seed at 64 px: other layouts, not a rescaled copy
            out[f"{kind}@{size}"] = _render(kind, size, count, sub_seed, split, offset[kind])
    return out


@torch.no_grad()
def accuracy(net: ShapesFeatureNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch):
        correct += int((net.logits(images[i : i + batch].float() / 255.0).argmax(1) == labels[i : i + batch]).sum())
    return correct / max(len(images), 1)


def train(steps: int, batch_size: int, lr: float, seed: int, train_count: int, test_count: int, log_every: int = 100):
    torch.manual_seed(seed)
    t0 = time.time()
    train_sets = build_set({"shapes": train_count, "textures": train_count // 2}, seed, "train")
    test_sets = build_set({"shapes": test_count, "textures": test_count}, seed + 1000, "test")
    x = torch.cat([v[0] for v in train_sets.values()])
    y = torch.cat([v[1] for v in train_sets.values()])
    print(f"rendered {len(x)} training and {sum(len(v[0]) for v in test_sets.values())} test images in {time.time() - t0:.0f} s", flush=True)
    net = ShapesFeatureNet(FeatureNetConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    t1 = time.time()
    for step in range(1, steps + 1):
        net.train()
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        xb = x[idx].float() / 255.0
        flip = torch.rand(batch_size, generator=gen) < 0.5
        xb[flip] = xb[flip].flip(-1)
        loss = F.cross_entropy(net.logits(xb), y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - t1:.0f} s)", flush=True)
    net.eval()
    acc = {name: accuracy(net, xs, ys) for name, (xs, ys) in test_sets.items()}
    acc["mean"] = sum(acc.values()) / len(acc)
    info = {"train_images": len(x), "test_images_per_group": {k: len(v[0]) for k, v in test_sets.items()},
            "train_seconds": round(time.time() - t0, 1)}
    return net, acc, info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m zoo.metrics.train_feature_net", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="output .safetensors (a .json sidecar is written beside it)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-count", type=int, default=6000, help="shapes images per size (textures get half)")
    p.add_argument("--test-count", type=int, default=600, help="held-out images per kind and size")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    net, acc, info = train(args.steps, args.batch_size, args.lr, args.seed, args.train_count, args.test_count)
    from zoo.weights import save_weights

    command = "python -m zoo.metrics.train_feature_net " + " ".join(shlex.quote(a) for a in argv)
    meta = {
        "model": FEATURE_NET_NAME,
        "variant": "v1",
        "feature_space": net.feature_space,
        "config": net.config.to_dict(),
        "command": command.strip(),
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "data": "ClassImageSet shapes+textures, train split, 32 and 64 px; held out: test split",
        "metrics": {"heldout_accuracy": {k: round(v, 4) for k, v in acc.items()}},
        **info,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
    }
    save_weights(net, args.out, meta)
    print(f"held-out accuracy: {acc}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
