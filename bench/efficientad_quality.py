"""EfficientAD quality on procedural data, and the paper's autoencoder ablation.

    zoo train efficientad --variant micro --steps 3000 --set category=parts --out runs/efficientad-micro-parts
    python -m zoo.bench.efficientad_quality --run runs/efficientad-micro-parts [--heldout-seed 1000]

Evaluates one trained run on its test split three ways, side by side: the combined map
(student-teacher + autoencoder, the paper's method), the student-teacher map alone and the
autoencoder map alone. The paper's claim (Sec. 3.3): the autoencoder branch is what catches
logical anomalies, so the combined map should beat student-teacher alone on them.
Writes bench/results/efficientad-quality-<run folder>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zoo.bench.common import RESULTS_DIR, format_table, machine_info, new_document, write_document

BRANCHES = {"combined": (True, True), "student_teacher": (True, False), "autoencoder": (False, True)}


HELDOUT_GOOD, HELDOUT_PER_DEFECT = 60, 24  # 60 + 24 x 6 defect kinds = 204 trays for `parts`


def heldout_folder(run: Path, category: str, seed: int, image_size: int) -> Path:
    """A test split the run never saw: the same generator under another seed, large enough
    (>= 180 images) to resolve differences of a few AUROC points."""
    from zoo.data.anomaly import generate_anomaly_dataset

    root = run / f"heldout-{seed}"
    if not (root / category / "meta.json").exists():
        generate_anomaly_dataset(root, category, seed=seed, image_size=image_size, n_train=0,
                                 n_test_good=HELDOUT_GOOD, n_test_per_defect=HELDOUT_PER_DEFECT)
    return root / category


def evaluate_run(run: Path, heldout_seed: int | None = None) -> dict:
    from zoo.data.anomaly import generate_anomaly_dataset
    from zoo.data.mvtec import MVTecAD, defect_kinds
    from zoo.models.efficientad.train import SYNTHETIC_CATEGORY, evaluate_anomaly
    from zoo.registry import create_model

    meta = json.loads((run / "model.json").read_text())
    config = meta["train_config"]
    category = config.get("category") or SYNTHETIC_CATEGORY
    if heldout_seed is not None:
        if meta["data"] != "synthetic":
            raise SystemExit("--heldout-seed needs a run trained on synthetic data")
        if heldout_seed == meta["seed"]:
            raise SystemExit(f"--heldout-seed {heldout_seed} is the run's own seed; pick another")
        folder = heldout_folder(run, category, heldout_seed, meta["config"]["image_size"])
    elif meta["data"] == "synthetic":
        folder = run / "data" / category
        if not folder.exists():  # deterministic by seed: regenerate what the run trained on
            generate_anomaly_dataset(run / "data", category, seed=meta["seed"], image_size=meta["config"]["image_size"])
    else:
        folder = Path(meta["data"]) / category if config.get("category") else Path(meta["data"])
    pipeline = create_model("efficientad", meta["variant"], weights=run / "model.safetensors")
    test_set = MVTecAD(folder, split="test", image_size=pipeline.config.image_size)
    kinds = defect_kinds(folder)
    results = {}
    with torch.no_grad():
        for branch, (use_st, use_ae) in BRANCHES.items():
            results[branch] = evaluate_anomaly(pipeline.model, test_set, kinds, use_st=use_st, use_ae=use_ae)
    return {
        "training": {k: meta.get(k) for k in ("command", "variant", "data", "seed", "steps", "seconds", "date")},
        "category": category,
        "test_set": f"held-out (seed {heldout_seed})" if heldout_seed is not None else "the run's own test split",
        "test_images": len(test_set),
        "defect_kinds": kinds,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.efficientad_quality", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a `zoo train efficientad` output folder")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--heldout-seed", type=int, default=None,
                        help=f"score on a fresh test split from this generator seed ({HELDOUT_GOOD} good + {HELDOUT_PER_DEFECT} per defect kind) instead of the run's own")
    args = parser.parse_args(argv)
    document = new_document("efficientad-quality", quick=False, machine=machine_info())
    document.update(evaluate_run(args.run, args.heldout_seed))
    suffix = f"-heldout{args.heldout_seed}" if args.heldout_seed is not None else ""
    path = write_document(document, args.out, Path(args.out) / f"efficientad-quality-{args.run.name}{suffix}-{document['date']}.json")
    metrics = ["image_auroc", "image_auroc_structural", "image_auroc_logical", "pixel_auroc", "au_pro", "au_pro_logical"]
    rows = [[branch] + [f"{document['results'][branch].get(m, float('nan')):.3f}" for m in metrics] for branch in BRANCHES]
    print(format_table(rows, ["map"] + metrics))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
