"""ViDT / ViDT+ weights scored side by side on the same held-out procedural shapes scenes.

    python -m zoo.bench.vidt_quality --weights zoo/models/vidt/weights/micro-demo.safetensors \\
        --weights runs/vidt-micro/model.safetensors --scenes 128
    python -m zoo.bench.vidt_quality --model vidt-plus --weights zoo/models/vidt/weights/micro-plus-demo.safetensors

Each weights file (`--model`, micro variant) is scored with COCO box AP (and mask AP for ViDT+) on
`--scenes` procedural scenes of split "val" under `--data-seed`: seed 0's val split, which no training run
of seed 0 trains on whatever its number of training scenes (a run's own 64-scene validation is its first
64). The scenes are those of `zoo.bench.oneformer_quality` (the same generator, folder and default seed).
Writes bench/results/vidt-quality-<model>-<scenes>scenes-<date>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.bench.common import format_table, machine_info, new_document, write_document
from zoo.bench.oneformer_quality import add_side_by_side_args, heldout_root, parse_side_by_side_args

SHOWN = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50")


def score(model_name: str, weights: Path, root: Path, variant: str = "micro") -> dict[str, float]:
    """COCO AP (fractions) of the weights on the folder's val split."""
    from zoo.models.vidt.train import evaluate_coco, evaluation_set
    from zoo.registry import create_model

    model = create_model(model_name, variant, weights=weights).model
    return {k: float(v) for k, v in evaluate_coco(model, evaluation_set(root, model.config)).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.vidt_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vidt", choices=("vidt", "vidt-plus"))
    add_side_by_side_args(parser, "a .safetensors file of --model")
    args = parse_side_by_side_args(parser, argv)
    root = heldout_root(args.workdir / f"seed{args.data_seed}-{args.scenes}", args.scenes, args.data_seed)
    document = new_document("vidt-quality", quick=False, machine=machine_info(threads=1))
    document.update({"model": args.model, "variant": args.variant,
                     "scenes": {"count": args.scenes, "seed": args.data_seed, "split": "val", "image_size": 128},
                     "results": {str(w): score(args.model, w, root, args.variant) for w in args.weights}})
    name = f"vidt-quality-{args.model}-{args.scenes}scenes-{document['date']}.json"
    path = write_document(document, args.out, Path(args.out) / name)
    rows = [[weights] + [f"{100 * metrics[k]:.1f}" if k in metrics else "-" for k in SHOWN] for weights, metrics in document["results"].items()]
    print(format_table(rows, ["weights", *SHOWN]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
