"""DocDiff on real scanned pages: does every bundled model raise PSNR and OCR accuracy over its input?

    python -m zoo.bench.docdiff_real [--seeds 3] [--variants micro,micro-deblur,...]

The pages are real scans that ship with scikit-image (`page`: a printed page photographed in
uneven light; `text`: handwriting on a board). Each bundled variant gets its own task's
degradation applied to them (`zoo.data.documents.degrade`; the mixed `micro` every task in turn),
under `--seeds` degradation seeds, and restores them. Reported per variant, page and task, as
mean +- standard deviation over seeds:

- PSNR (dB) of the input and of the restored page against the real scan;
- character error rate of rapidocr (PP-OCRv4 detection + recognition, the whole page) on the
  input and on the restored page, against rapidocr's reading of the real scan itself (the scans
  have no ground-truth transcript: the clean page's reading is the reference); only where that
  reading has `MIN_REFERENCE_CHARS` characters (the printed `page`; rapidocr cannot read the
  handwriting of `text`).

The verdict per variant: "raises" when the restored page's mean PSNR is above the input's on
every (page, task) row and its CER is not above the input's; otherwise what it lowers.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from zoo.bench.common import RESULTS_DIR, format_table, machine_info, new_document, write_document

PAGES = ("page", "text")
MIN_REFERENCE_CHARS = 40  # below this, rapidocr cannot read the clean scan itself: no OCR figure for that page


def real_page(name: str) -> np.ndarray:
    """A scikit-image scan as (H, W, 3) float32 in [0, 1]."""
    from skimage import data

    grey = getattr(data, name)().astype(np.float32) / 255.0
    return np.repeat(grey[:, :, None], 3, axis=2)


@functools.lru_cache(maxsize=1)
def _ocr_engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def read_page(image: np.ndarray) -> str:
    """rapidocr's reading of a page: its lines top to bottom, left to right, joined by spaces."""
    result, _ = _ocr_engine()((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, ::-1])  # it takes BGR
    lines = sorted(result or [], key=lambda r: (round(min(p[1] for p in r[0]) / 10), min(p[0] for p in r[0])))
    return " ".join(text for _, text, _ in lines)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def evaluate(variants: list[str], seeds: int, ocr: bool = True) -> list[dict[str, Any]]:
    from zoo.data._rng import rng_for
    from zoo.data.documents import TASKS, degrade
    from zoo.metrics.text import character_error_rate
    from zoo.registry import create_model, variant_config

    rows = []
    for variant in variants:
        pipeline = create_model("docdiff", variant)
        task = variant_config("docdiff", variant).task
        for name in PAGES:
            clean = real_page(name)
            reference = read_page(clean) if ocr else ""
            readable = len(reference) >= MIN_REFERENCE_CHARS  # rapidocr reads the printed `page`, not the handwritten `text`
            for page_task in (TASKS if task in ("", "mixed") else (task,)):
                per_seed = []
                for seed in range(seeds):
                    degraded = degrade(rng_for(seed, "docdiff-real", name, page_task), clean, page_task).astype(np.float32)
                    as_uint8 = (degraded * 255 + 0.5).astype(np.uint8)
                    restored = pipeline.predict(as_uint8).images[0].astype(np.float32) / 255.0
                    given = as_uint8.astype(np.float32) / 255.0
                    entry = {"psnr_in": _psnr(given, clean), "psnr_out": _psnr(restored, clean)}
                    if readable:
                        entry["cer_in"] = character_error_rate(read_page(given), reference)
                        entry["cer_out"] = character_error_rate(read_page(restored), reference)
                    per_seed.append(entry)
                row: dict[str, Any] = {"variant": variant, "page": name, "task": page_task, "seeds": seeds, "reference_chars": len(reference)}
                for key in per_seed[0]:
                    values = [e[key] for e in per_seed]
                    row[key] = statistics.fmean(values)
                    row[key + "_std"] = statistics.pstdev(values)
                rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        lowered = [f"PSNR on {r['page']}/{r['task']}" for r in mine if r["psnr_out"] <= r["psnr_in"]]
        lowered += [f"OCR on {r['page']}/{r['task']}" for r in mine if "cer_out" in r and r["cer_out"] > r["cer_in"]]
        out[variant] = "raises" if not lowered else "lowers " + ", ".join(lowered)
    return out


def main(argv: list[str] | None = None) -> int:
    from zoo.registry import get_card

    parser = argparse.ArgumentParser(prog="python -m zoo.bench.docdiff_real", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="degradation seeds per page and task")
    parser.add_argument("--variants", default="", help="comma-separated (default: every variant with bundled weights)")
    parser.add_argument("--no-ocr", action="store_true", help="PSNR only (no rapidocr)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    card = get_card("docdiff")
    variants = [v for v in args.variants.split(",") if v] or [v for v in card.variants if card.demo_weights_path(v)]
    document = new_document("docdiff-real", quick=False, machine=machine_info(),
                            command=" ".join(["python -m zoo.bench.docdiff_real", *(sys.argv[1:] if argv is None else argv)]))
    rows = evaluate(variants, args.seeds, ocr=not args.no_ocr)
    document.update(pages=list(PAGES), rows=rows, verdicts=verdicts(rows))
    path = write_document(document, args.out, Path(args.out) / f"docdiff-real-cpu-{document['date']}.json")
    table = [[r["variant"], r["page"], r["task"], f"{r['psnr_in']:.2f} -> {r['psnr_out']:.2f} +- {r['psnr_out_std']:.2f}",
              f"{r['cer_in']:.3f} -> {r['cer_out']:.3f}" if "cer_in" in r else "-"] for r in rows]
    print(format_table(table, ["variant", "page", "task", "PSNR dB in -> out", "CER in -> out"]))
    for variant, verdict in document["verdicts"].items():
        print(f"{variant}: {verdict}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
