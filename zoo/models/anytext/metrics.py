"""AnyText's OCR accuracy (Sec. 4.1, the AnyText-benchmark's eval_dgocr.py): each text line is cropped
from the generated image at its position and read by an OCR model; Sen.ACC is the share of lines read
exactly, NED the mean of 1 - edit_distance / max(len(prediction), len(truth)). The paper reads with
PP-OCRv3 (DuGuang OCR as well); we read with rapidocr's PP-OCRv4 recogniser (ONNX Runtime, the
`TextRecognizer` of rapidocr-onnxruntime), on the bounding rectangle of each position.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.metrics.text import normalized_edit_similarity

from .glyphs import crop_box, position_mask


@functools.cache
def rapidocr_recognizer() -> Any:
    """rapidocr's PP-OCRv4 recogniser (ONNX Runtime, threads from OMP_NUM_THREADS when set)."""
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

    from .recognizer import rapidocr_model_path

    threads = int(os.environ.get("OMP_NUM_THREADS", "-1"))
    return TextRecognizer({"model_path": str(rapidocr_model_path("rec")), "use_cuda": False, "use_dml": False,
                           "intra_op_num_threads": threads, "inter_op_num_threads": threads,
                           "rec_batch_num": 16, "rec_img_shape": [3, 48, 320]})


def read_lines(image: np.ndarray, polygons: Sequence[np.ndarray]) -> list[str]:
    """What rapidocr reads in each position's bounding rectangle of an (H, W, 3) uint8 image."""
    crops = []
    for polygon in polygons:
        box = crop_box(position_mask([polygon], image.shape[0]))
        x0, y0, x1, y1 = box if box is not None else (0, 0, 1, 1)
        crops.append(np.ascontiguousarray(image[y0:y1, x0:x1, ::-1]))  # rapidocr takes BGR (OpenCV)
    if not crops:
        return []
    results, _ = rapidocr_recognizer()(crops)
    return [text for text, _ in results]


def ocr_accuracy(images: Sequence[np.ndarray], lines: Sequence[Sequence[str]], polygons: Sequence[Sequence[np.ndarray]]) -> dict[str, float]:
    """Sen.ACC and NED over every line of every image (the benchmark's per-line averages)."""
    exact, similarity = [], []
    for image, texts, polys in zip(images, lines, polygons):
        for read, truth in zip(read_lines(np.asarray(image), polys), texts):
            exact.append(float(read == truth))
            similarity.append(normalized_edit_similarity(read, truth))
    if not exact:
        return {"sen_acc": 0.0, "ned": 0.0, "lines": 0}
    return {"sen_acc": float(np.mean(exact)), "ned": float(np.mean(similarity)), "lines": len(exact)}
