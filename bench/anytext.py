"""AnyText evidence at CPU size (issue #16), over >= 3 seeds.

    python -m zoo.bench.anytext ablation --steps 200 --seeds 0,1,2 --workers 2
    python -m zoo.bench.anytext collect --out runs/anytext-ablation --steps 200
    python -m zoo.bench.anytext report bench/results/anytext-ablation-cpu-DATE.json

Four arms of the micro (64 px procedural word images, one line of 3-5 letters, 16x16x4 latents of the
bundled micro-f4 autoencoder), the same size and schedule each, trained through the card's stage
(zoo.bench.ablation.train_arm) and scored by its `finalize` on 100 held-out images (DDIM 20 steps, the micro's
guidance 3): each line cropped at its position from the generated image and read by rapidocr's PP-OCRv4
recogniser, Sen.ACC (exact reads) and NED (1 - normalised edit distance); the ground-truth images read the
same way give the ceiling.

- `full`: glyph + position + masked-image control (auxiliary latent module), the text embedding module and
  the text perceptual loss (lambda 0.003, alpha_bar_t weighted; on 2 samples a batch, scaled, for CPU time);
- `plain`: a plain caption-conditioned model of the same size: the words in the caption, no glyph,
  position or embedding input (the paper's claim is that this does not write legible text);
- `no-embedding`: the text embedding module off (the paper's ablation: 20.2 % -> 46.0 % Sen.ACC with it);
- `no-perceptual`: the text perceptual loss off (the paper: 46.0 % -> 50.0 % with it).

Writes bench/results/anytext-ablation-Nseeds-Ksteps-cpu-<date>.json (anytext-ablation-cpu-<date>.json for one seed); tables
print mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from zoo.bench.ablation import Arm, collect_seeds, seed_summary, train_seeds
from zoo.bench.common import RESULTS_DIR, format_table, log, machine_info, new_document, pin_threads, seed_list, write_document

COMMON = {"eval_images": "100"}
ARMS = (
    Arm("full", "anytext", description="glyph/position/masked-image control + text embedding module + perceptual loss"),
    Arm("plain", "anytext", train={"control": "false"}, description="plain caption-conditioned model of the same size"),
    Arm("no-embedding", "anytext", train={"embedding_module": "false"}, description="without the text embedding module"),
    Arm("no-perceptual", "anytext", train={"perceptual_weight": "0"}, description="without the text perceptual loss"),
)




def run_suite(steps: int, seeds: list[int], workers: int, out: Path, collect_only: bool = False) -> dict[str, Any]:
    started = time.time()
    if collect_only:
        runs = collect_seeds(ARMS, seeds, out)
    else:
        # the central claim (full vs plain) on every seed first, then the paper's ablation arms
        runs = train_seeds(ARMS[:2], steps, seeds, out, workers, COMMON)
        runs.update(train_seeds(ARMS[2:], steps, seeds, out, workers, COMMON))
    result = seed_summary(ARMS, runs, steps, seeds, common=COMMON)
    result["wall_s"] = round(time.time() - started, 1)
    return result


def print_result(result: dict[str, Any]) -> None:
    cols = ["sen_acc", "ned", "ocr_feature_mse", "sen_acc_ground_truth", "sen_acc_codec"]

    def cell(summary: dict[str, Any], key: str) -> str:
        s = summary.get(key)
        return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})" if s and s.get("n") else "—"

    print(format_table([[a["name"], *[cell(a["summary"], k) for k in cols]] for a in result["arms"]], ["arm", *cols]))
    paired = [[name, *[cell(diff, k) for k in cols[:3]]] for name, diff in result.get("paired", {}).items() if diff]
    if paired:
        print(format_table(paired, ["paired, per seed", *cols[:3]]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=("ablation", "collect", "report"))
    parser.add_argument("path", nargs="?", type=Path, help="report: a results JSON")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/anytext-ablation"))
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.suite == "report":
        print_result(json.loads(args.path.read_text()))
        return 0
    seeds = args.seeds
    if len(seeds) < 3:
        log("warning: fewer than 3 seeds; the spread is not evidence")
    threads = pin_threads(1)
    command = "python -m zoo.bench.anytext " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    name = "anytext-ablation" if len(seeds) == 1 else f"anytext-ablation-{len(seeds)}seeds-{args.steps}steps"  # as bench/ablation.py
    document = new_document(name, quick=False, machine=machine_info(threads), command=command)
    document.update(run_suite(args.steps, seeds, args.workers, args.out, collect_only=args.suite == "collect"))
    print_result(document)
    path = write_document(document, args.results)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
