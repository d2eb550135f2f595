"""DocDiff quality on held-out procedural pages, and the paper's residual-diffusion claim.

    zoo train docdiff --variant micro --steps 600 --out runs/docdiff-micro
    python -m zoo.bench.docdiff_quality --run runs/docdiff-micro
    python -m zoo.bench.docdiff_quality --run runs/docdiff-micro-deblur --task deblur

Measured side by side on held-out procedural pages (all four degradations in turn, or one with
--task for the per-task variants; a seed the run never saw), each page restored whole through
the pipeline (overlapping 128 x 128 tiles):

1. PSNR / SSIM (torchmetrics) for the input, CP alone and CP + HRR;
2. the paper's claim (Sec. 3, Fig. 1): the residual diffusion restores the high frequencies
   that regression loses, so the high-frequency error (Laplacian energy of the error, and
   Sobel edge F-score) should be better for CP + HRR than for CP alone;
3. plug-and-play: a plain U-Net (the CP architecture, trained separately with MSE only, no
   frequency term, no diffusion) refined by the run's HRR without joint training;
4. sampling steps against PSNR and time (the faster DDIM jump-step sampler against all T).

Writes bench/results/docdiff-quality-<run folder>-<date>.json. Several `--run`s (one training run a
seed, same recipe) are benched in turn on the same pages; the document then also reports each
output's mean ± sample std over the runs and the paired differences (CP + HRR minus CP alone;
plain U-Net + HRR minus plain U-Net) run by run, in docdiff-quality-<first run>-<N>seeds-<date>.json:

    python -m zoo.bench.docdiff_quality --run runs/a-s0 --run runs/a-s1 --run runs/a-s2 --task deblur --pages 100 --steps 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zoo.bench.common import RESULTS_DIR, format_table, machine_info, mean_std, new_document, write_document


def _pages(seed: int, count: int, size: int, task: str | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """`count` held-out pages: the four tasks in turn, or all of `task`."""
    from zoo.data.documents import TASKS, make_pair

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown document task {task!r}; known: {', '.join(TASKS)}")
    degraded, clean, tasks = [], [], []
    for i in range(count):
        task_i = task or TASKS[i % len(TASKS)]
        d, c = make_pair(seed, task_i, "bench", i, (size, size))
        degraded.append(torch.from_numpy(d).permute(2, 0, 1))
        clean.append(torch.from_numpy(c).permute(2, 0, 1))
        tasks.append(task_i)
    return degraded, clean, tasks


def _metrics(preds: list[torch.Tensor], targets: list[torch.Tensor]) -> dict[str, float]:
    from zoo.metrics.image import restoration_metrics

    per = [restoration_metrics(p[None], t[None]) for p, t in zip(preds, targets)]
    return {k: sum(m[k] for m in per) / len(per) for k in per[0]}


def train_plain_unet(run: Path, steps: int, seed: int) -> torch.nn.Module:
    """The CP architecture trained alone with plain MSE on the run's training pages."""
    from zoo.data.paired import PairedCrops, PairedFolder
    from zoo.models.docdiff.model import UNet, preset_config

    meta = json.loads((run / "model.json").read_text())
    tc = meta["train_config"]
    folder = run / "data" / f"{tc['task'] or meta['config']['task']}-train"
    if not folder.is_dir():  # deterministic by seed: regenerate what the run trained on
        from zoo.data.documents import generate_document_pairs

        generate_document_pairs(folder, task=tc["task"] or meta["config"]["task"], count=tc["pages"], seed=meta["seed"],
                                split="train", size=(tc["page_size"], tc["page_size"]))
    crops = PairedCrops(PairedFolder(folder), tc["crop_size"], seed=seed, length=steps * tc["batch_size"])
    torch.manual_seed(seed)
    net = UNet(3, preset_config(meta["variant"]), timed=False)
    opt = torch.optim.AdamW(net.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    loader = torch.utils.data.DataLoader(crops, batch_size=tc["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    net.train()
    for batch in loader:
        loss = torch.nn.functional.mse_loss(net(batch["degraded"]), batch["clean"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def evaluate(run: Path, pages: int, size: int, step_list: list[int], plain_steps: int, seed: int,
             task: str | None = None) -> dict:
    from zoo.registry import create_model

    meta = json.loads((run / "model.json").read_text())
    pipeline = create_model("docdiff", meta["variant"], weights=run / "model.safetensors")
    steps = pipeline.default_steps(0)
    degraded, clean, tasks = _pages(seed, pages, size, task)

    started = time.perf_counter()
    restored = pipeline.restore(degraded, steps, tile=True, seed=0)
    seconds = time.perf_counter() - started
    outs, coarses = [r[0] for r in restored], [r[1] for r in restored]
    quality = {"input": _metrics(degraded, clean), "cp": _metrics(coarses, clean), "cp_hrr": _metrics(outs, clean)}
    per_task = {}
    for kind in sorted(set(tasks)):
        idx = [i for i, t in enumerate(tasks) if t == kind]
        per_task[kind] = {name: _metrics([src[i] for i in idx], [clean[i] for i in idx])
                          for name, src in (("input", degraded), ("cp", coarses), ("cp_hrr", outs))}

    sweep = []
    for n in step_list:
        started = time.perf_counter()
        result = restored if n == steps else pipeline.restore(degraded, n, tile=True, seed=0)
        elapsed = seconds if n == steps else time.perf_counter() - started
        m = _metrics([r[0] for r in result], clean)
        sweep.append({"steps": n, "psnr": m["psnr"], "ssim": m["ssim"], "laplacian_error": m["laplacian_error"],
                      "seconds_per_page": elapsed / pages})

    plug = None
    if plain_steps > 0:
        started = time.perf_counter()
        plain = train_plain_unet(run, plain_steps, seed + int(meta.get("seed") or 0))  # a run of another seed gets another plain U-Net
        plain_seconds = time.perf_counter() - started
        with torch.no_grad():
            plain_out = [_tiled_plain(pipeline, plain, d) for d in degraded]
        refined = [r[0] for r in pipeline.restore(plain_out, steps, tile=True, seed=0, condition=True)]
        plug = {"plain_unet": _metrics(plain_out, clean), "plain_unet_hrr": _metrics(refined, clean),
                "plain_train_steps": plain_steps, "plain_train_seconds": plain_seconds}
    return {
        "training": {k: meta.get(k) for k in ("command", "variant", "data", "seed", "steps", "seconds", "date")},
        "pages": {"count": pages, "size": size, "seed": seed, "task": task or "all", "tasks": tasks},
        "sampling_steps": steps,
        "results": quality,
        "per_task": per_task,
        "claim_high_frequency": {
            "laplacian_error_cp": quality["cp"]["laplacian_error"], "laplacian_error_cp_hrr": quality["cp_hrr"]["laplacian_error"],
            "edge_f1_cp": quality["cp"]["edge_f1"], "edge_f1_cp_hrr": quality["cp_hrr"]["edge_f1"],
            "hrr_lowers_laplacian_error": quality["cp_hrr"]["laplacian_error"] < quality["cp"]["laplacian_error"],
        },
        "plug_and_play": plug,
        "steps_sweep": sweep,
    }


def _tiled_plain(pipeline, net: torch.nn.Module, page: torch.Tensor) -> torch.Tensor:
    """Run the plain U-Net through the pipeline's tiler by standing it in for the CP graph."""
    pipeline.set_runner("coarse", lambda image: (net(image),))
    pipeline.set_runner("refine_step", lambda noisy, coarse, t, tp: (torch.zeros_like(noisy), torch.zeros_like(noisy)))
    try:
        return pipeline.restore([page], 1, tile=True, seed=0)[0][1]
    finally:
        pipeline.set_runner("coarse", None)
        pipeline.set_runner("refine_step", None)


OUTPUTS = ("input", "cp", "cp_hrr", "plain_unet", "plain_unet_hrr")
METRICS = ("psnr", "ssim", "laplacian_error", "edge_f1")
PAIRS = (("cp_hrr", "cp"), ("plain_unet_hrr", "plain_unet"))  # the HRR's contribution, jointly trained and plug-and-play


def outputs_of(result: dict) -> dict[str, dict[str, float]]:
    """The outputs' metrics of one `evaluate` result, by output name (the plain U-Net's only where it was trained)."""
    merged = {**result["results"], **(result["plug_and_play"] or {})}
    return {name: merged[name] for name in OUTPUTS if name in merged}


def seed_spread(results: list[dict]) -> dict:
    """Mean ± sample std of every output's metrics over the runs, and the paired differences run by run."""
    outputs = [outputs_of(r) for r in results]
    names = [name for name in OUTPUTS if all(name in o for o in outputs)]
    summary = {name: {m: mean_std(o[name][m] for o in outputs) for m in METRICS} for name in names}
    paired = {f"{a} minus {b}": {m: mean_std(o[a][m] - o[b][m] for o in outputs) for m in METRICS} for a, b in PAIRS if a in names}
    return {"runs": len(results), "summary": summary, "paired": paired}


def _cell(stats: dict) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats["n"] > 1 else f"{stats['mean']:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.docdiff_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True,
                        help="a `zoo train docdiff` output folder; repeat it for one run a seed (mean ± std and paired differences)")
    parser.add_argument("--pages", type=int, default=8, help="held-out pages (the four tasks in turn, or --task)")
    parser.add_argument("--task", type=str, default=None, help="only pages of this degradation (deblur, denoise, watermark, seal)")
    parser.add_argument("--size", type=int, default=256, help="page height and width")
    parser.add_argument("--steps", type=str, default="1,2,4,10,25,100", help="sampling steps to sweep")
    parser.add_argument("--plain-steps", type=int, default=300, help="training steps of the plain MSE U-Net (0: skip the plug-and-play check)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the held-out pages")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.run if not (run / "model.json").is_file()]
    if missing:
        parser.error(f"not a finished `zoo train docdiff` run (no model.json): {', '.join(missing)}")
    torch.set_num_threads(1)  # tiny convolutions: one thread beats contending for shared cores
    steps = [int(s) for s in args.steps.split(",")]
    document = new_document("docdiff-quality", quick=False, machine=machine_info(threads=1))
    results = []
    for run in args.run:
        results.append(evaluate(run, args.pages, args.size, steps, args.plain_steps, args.seed, args.task))
        print(f"{run}: " + ", ".join(f"{name} {m['psnr']:.2f} dB" for name, m in outputs_of(results[-1]).items()), flush=True)
    document.update(results[0])
    name = f"docdiff-quality-{args.run[0].name}"
    if len(results) > 1:
        document["runs"] = [{"run": str(run), **result} for run, result in zip(args.run, results)]
        document["seeds"] = seed_spread(results)
        name += f"-{len(results)}seeds"
    path = write_document(document, args.out, Path(args.out) / f"{name}-{document['date']}.json")
    if len(results) > 1:
        spread = document["seeds"]
        print(format_table([[out] + [_cell(stats[m]) for m in METRICS] for out, stats in spread["summary"].items()], ["output", *METRICS]))
        print(format_table([[pair] + [_cell(stats[m]) for m in METRICS] for pair, stats in spread["paired"].items()], ["paired", *METRICS]))
    else:
        outputs = outputs_of(document)
        print(format_table([[out] + [f"{stats[m]:.4f}" for m in METRICS] for out, stats in outputs.items()], ["output", *METRICS]))
    print(format_table([[s["steps"], f"{s['psnr']:.3f}", f"{s['ssim']:.4f}", f"{s['seconds_per_page']:.3f}"] for s in document["steps_sweep"]],
                       ["steps", "psnr", "ssim", "s/page"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
