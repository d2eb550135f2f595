"""OneFormer weights scored side by side on the same held-out procedural panoptic scenes.

    python -m zoo.bench.oneformer_quality --weights zoo/models/oneformer/weights/micro-demo.safetensors \
        --weights runs/oneformer-micro/model.safetensors --scenes 128

Each weights file (micro variant) is scored on `--scenes` procedural shapes scenes of split "val" under
`--data-seed` (seed 0's val split: no training run of seed 0 trains on it, whatever its number of
training scenes) with the paper's metrics (PQ / things / stuff, mIoU, mask AP) after the official
post-processing (`object_mask_threshold` 0.8) and again at 0.4: a CPU-sized model's thing classes
often stay below 0.8, which sets PQ on things to 0 whatever else it learnt.
Writes bench/results/oneformer-quality-<scenes>scenes-<date>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import RESULTS_DIR, format_table, machine_info, new_document, write_document

THRESHOLDS = (0.8, 0.4)  # the official object_mask_threshold, and a lower one for under-confident micro models
SHOWN = ("pq", "pq_things", "pq_stuff", "miou", "mask_ap")


def heldout_root(workdir: Path, scenes: int, seed: int, image_size: int = 128) -> Path:
    """A folder of `scenes` val-split procedural shapes scenes under `seed`, in COCO instances and panoptic
    (generated once into `workdir`; scenes depend on seed, split and index only, never on a run's training count)."""
    from zoo.models.oneformer.train import procedural_data

    return procedural_data(workdir, 0, scenes, seed, image_size)


def heldout_scenes(workdir: Path, scenes: int, seed: int, image_size: int = 128) -> Any:
    """`CocoPanoptic` of `heldout_root`'s scenes."""
    from zoo.data.coco import CocoPanoptic

    root = heldout_root(workdir, scenes, seed, image_size)
    return CocoPanoptic(root / "images", root / "annotations" / "panoptic_val.json", root / "annotations" / "panoptic_val")


def add_side_by_side_args(parser: argparse.ArgumentParser, weights_help: str, scenes_help: str = "held-out scenes") -> None:
    """The options of a bench that scores weights files side by side on `heldout_root`'s scenes."""
    parser.add_argument("--weights", type=Path, action="append", required=True, help=f"{weights_help}; repeat to compare")
    parser.add_argument("--variant", default="micro")
    parser.add_argument("--scenes", type=int, default=128, help=scenes_help)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the procedural val split")
    parser.add_argument("--workdir", type=Path, default=Path("runs/oneformer-heldout"), help="where the scenes are generated")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")


def parse_side_by_side_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parsed and checked (every weights file present, a scene or more); pins torch to one thread."""
    args = parser.parse_args(argv)
    missing = [str(w) for w in args.weights if not w.is_file()]
    if missing:
        parser.error(f"no such weights file: {', '.join(missing)}")
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    torch.set_num_threads(1)  # a micro model: one thread beats contending for shared cores
    return args


def score(weights: Path, scenes: Any, variant: str = "micro") -> dict[str, dict[str, float]]:
    """The weights' metrics at each threshold, by threshold."""
    from zoo.models.oneformer.train import evaluate_segmentation
    from zoo.registry import create_model

    model = create_model("oneformer", variant, weights=weights).model
    return {str(t): {k: float(v) for k, v in evaluate_segmentation(model, scenes, object_mask_threshold=t).items()} for t in THRESHOLDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.oneformer_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_side_by_side_args(parser, "a OneFormer .safetensors file", "held-out scenes (100 or more resolve a few PQ points)")
    args = parse_side_by_side_args(parser, argv)
    scenes = heldout_scenes(args.workdir / f"seed{args.data_seed}-{args.scenes}", args.scenes, args.data_seed)
    document = new_document("oneformer-quality", quick=False, machine=machine_info(threads=1))
    document.update({"scenes": {"count": args.scenes, "seed": args.data_seed, "split": "val", "image_size": 128},
                     "thresholds": list(THRESHOLDS), "results": {str(w): score(w, scenes, args.variant) for w in args.weights}})
    path = write_document(document, args.out, Path(args.out) / f"oneformer-quality-{args.scenes}scenes-{document['date']}.json")
    rows = [[weights, threshold] + [f"{metrics[k]:.1f}" for k in SHOWN]
            for weights, by_threshold in document["results"].items() for threshold, metrics in by_threshold.items()]
    print(format_table(rows, ["weights", "threshold", *SHOWN]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
