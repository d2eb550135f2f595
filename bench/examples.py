"""Write the bundled demo examples with what each is meant to show (`STEM.expect.json`).

    python -m zoo.bench.examples vidt oneformer efficientad docdiff interlcm

Each example is drawn by the family's procedural generator under a seed no training run uses
(`EXAMPLE_SEED`), so the bundled weights never saw it, and its ground truth (boxes and classes,
the defect's box) goes beside it for `zoo bench demo-check` (bench/demo_check.py) to check the
bundled weights against. Same seed, same bytes: rerunning rewrites identical files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoo.data._io import write_png

EXAMPLE_SEED = 20261207  # not a seed of any training run or test set in the project
MODELS_DIR = Path(__file__).resolve().parent.parent / "zoo" / "models"
EXPECT_SUFFIX = ".expect.json"


def expect_path(example: str | Path) -> Path:
    """`shapes.png` -> `shapes.expect.json` beside it."""
    path = Path(example)
    return path.with_name(path.stem + EXPECT_SUFFIX)


def _write(folder: Path, stem: str, image: np.ndarray, expect: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    write_png(path, image)
    expect_path(path).write_text(json.dumps(expect, indent=2) + "\n")
    return path


def _scene_objects(scene, rows: int | None = None) -> list[dict]:
    """Things of a shapes scene as {label, box xyxy in pixels}, cropped to the first `rows` rows."""
    objects = []
    for thing in scene.objects:
        x, y, w, h = thing.box
        objects.append({"label": thing.shape, "box": [x, y, x + w, y + h]})
    if rows is not None:
        objects = [o for o in objects if o["box"][3] <= rows]
    return objects


def _whole_in_rows(scene, rows: int) -> bool:
    """Every thing lies wholly in the first `rows` rows (and none is cut by the crop)."""
    return all(np.nonzero(t.mask)[0].max() < rows for t in scene.objects)


def detection_examples(folder: Path, min_objects: int = 3, max_objects: int = 6) -> list[Path]:
    """ViDT: a square 128 scene and a wide 192x128 one (a 192 scene whose things all lie in its top 128 rows)."""
    from zoo.data.shapes import generate_scene

    paths = []
    index = 0
    while True:
        scene = generate_scene(EXAMPLE_SEED, index, image_size=128, min_objects=min_objects, max_objects=max_objects, split="example")
        if len(scene.objects) >= min_objects + 1:
            break
        index += 1
    paths.append(_write(folder, "shapes", scene.image, {
        "check": "detections", "generator": "zoo.data.shapes.generate_scene",
        "seed": EXAMPLE_SEED, "index": index, "objects": _scene_objects(scene)}))
    index = 0
    while True:
        scene = generate_scene(EXAMPLE_SEED, f"wide-{index}", image_size=192, min_objects=min_objects, max_objects=max_objects, split="example")
        if len(scene.objects) >= min_objects and _whole_in_rows(scene, 128):
            break
        index += 1
    paths.append(_write(folder, "shapes-wide", scene.image[:128], {
        "check": "detections", "generator": "zoo.data.shapes.generate_scene (192 px, top 128 rows)",
        "seed": EXAMPLE_SEED, "index": f"wide-{index}", "objects": _scene_objects(scene, rows=128)}))
    return paths


def segmentation_examples(folder: Path, size: int = 160) -> list[Path]:
    """OneFormer: two 160 scenes; the instance task must find their things."""
    from zoo.data.shapes import generate_scene

    paths = []
    for n, index in enumerate((0, 1), start=1):
        scene = generate_scene(EXAMPLE_SEED, f"seg-{index}", image_size=size, min_objects=3, max_objects=5, split="example")
        paths.append(_write(folder, f"shapes_{n}", scene.image, {
            "check": "segments", "task": "instance", "generator": "zoo.data.shapes.generate_scene",
            "seed": EXAMPLE_SEED, "index": f"seg-{index}", "objects": _scene_objects(scene)}))
    return paths


def anomaly_examples(folder: Path, size: int = 128) -> list[Path]:
    """EfficientAD: a good tray and three defective ones, each defect's box recorded."""
    from zoo.data.anomaly import make_sample

    paths = []
    for defect in ("good", "missing_part", "extra_part", "scratch"):
        image, mask = make_sample("parts", defect, seed=EXAMPLE_SEED, index=0, image_size=size, split="test")
        expect: dict = {"check": "anomaly", "generator": "zoo.data.anomaly.make_sample (parts)", "seed": EXAMPLE_SEED,
                        "defect": defect}
        if defect != "good":
            ys, xs = np.nonzero(mask)
            expect["defect_box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        paths.append(_write(folder, defect, (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), expect))
    return paths


DOCUMENT_EXAMPLES = (  # (stem, real scan, task): each task on a real page, restored by the demo's mixed model and the task's own
    ("page-blurred", "page", "deblur"), ("text-noisy", "text", "denoise"),
    ("page-watermark", "page", "watermark"), ("page-seal", "page", "seal"),
)


def document_examples(folder: Path) -> list[Path]:
    """DocDiff: scikit-image's real scans with one task's degradation each (`zoo.data.documents.degrade`)."""
    from zoo.bench.docdiff_real import real_page
    from zoo.data._rng import rng_for
    from zoo.data.documents import degrade

    paths = []
    for stem, page, task in DOCUMENT_EXAMPLES:
        degraded = degrade(rng_for(EXAMPLE_SEED, "docdiff-example", stem), real_page(page), task)
        paths.append(_write(folder, stem, (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8), {
            "check": "restoration", "generator": "zoo.data.documents.degrade on a scikit-image scan", "seed": EXAMPLE_SEED,
            "clean": f"skimage:{page}", "task": task, "variants": ["micro", f"micro-{task}"]}))
    return paths


FACE_EXAMPLE_SIZE = 256  # the astronaut photo's side: MTCNN finds its degraded face on every draw tried (at 192 px, 5 of 6)


def face_examples(folder: Path) -> list[Path]:
    """InterLCM: scikit-image's astronaut photo with one fixed CodeFormer degradation (blur sigma 1.2, x3 down,
    noise 8, JPEG 60), its clean version beside it (`astronaut-clean.png`, the restoration check's reference)."""
    import cv2
    import skimage.data

    from zoo.data._rng import rng_for
    from zoo.data.degradation import CodeFormerDegradation, codeformer_degrade

    size = FACE_EXAMPLE_SIZE
    clean = cv2.resize(np.asarray(skimage.data.astronaut()), (size, size), interpolation=cv2.INTER_AREA)
    fixed = CodeFormerDegradation(blur_sigma=(1.2, 1.2), downsample_range=(3.0, 3.0), noise_range=(8.0, 8.0), jpeg_range=(60, 61),
                                  iso_prob=1.0)
    degraded = codeformer_degrade(clean.astype(np.float32) / 255.0, rng_for(EXAMPLE_SEED, "interlcm-example"), fixed)
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / "astronaut-clean.png", clean)
    return [_write(folder, "astronaut-degraded", (degraded * 255 + 0.5).astype(np.uint8), {
        "check": "restoration", "generator": "zoo.data.degradation.codeformer_degrade (blur 1.2, x3, noise 8, JPEG 60) "
        "on scikit-image's astronaut", "seed": EXAMPLE_SEED, "clean": "astronaut-clean.png", "task": "face restoration",
        "variants": ["micro", "micro-128"]})]


WRITERS: dict[str, tuple[str, Callable[[Path], list[Path]]]] = {
    "vidt": ("vidt", detection_examples),
    "oneformer": ("oneformer", segmentation_examples),
    "efficientad": ("efficientad", anomaly_examples),
    "docdiff": ("docdiff", document_examples),
    "interlcm": ("interlcm", face_examples),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.examples", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="+", choices=list(WRITERS))
    args = parser.parse_args(argv)
    for family in args.families:
        package, writer = WRITERS[family]
        for path in writer(MODELS_DIR / package / "examples"):
            print(f"wrote {path} and {expect_path(path).name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
