"""RefCOCO-style referring expressions: writer and reader.

The RefCOCO/RefCOCO+/RefCOCOg releases (Yu et al. 2016, Mao et al. 2016; the `refer` API)
are a COCO `instances.json` plus a list of refs, each
`{ref_id, ann_id, image_id, category_id, split, file_name, sent_ids, sentences: [{sent_id,
sent, raw, tokens}]}`. The official refs ship as a Python pickle (`refs(unc).p`); we read and
write the same records as JSON (never unpickling downloaded files: convert a trusted pickle
once with `json.dump(pickle.load(f), out)`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data._io import read_rgb, write_json
from zoo.data.coco import _as_hw, _resize_image, _resize_masks, _to_tensor, load_coco


def make_sentence(sent_id: int, text: str) -> dict[str, Any]:
    """One RefCOCO sentence record: lower-cased `sent`, the original `raw`, whitespace `tokens`."""
    sent = " ".join(text.lower().split())
    return {"sent_id": int(sent_id), "sent": sent, "raw": text, "tokens": sent.split(" ")}


def write_refcoco(path: str | Path, refs: Sequence[dict[str, Any]]) -> Path:
    """Write refs (each with ref_id, ann_id, image_id, category_id, split, file_name and
    `sentences` as strings or sentence records) as RefCOCO-style JSON."""
    out, next_sent = [], 0
    for ref in refs:
        ref = dict(ref)
        sentences = []
        for s in ref.get("sentences", []):
            if isinstance(s, str):
                s = make_sentence(next_sent, s)
            next_sent = max(next_sent, int(s["sent_id"])) + 1
            sentences.append(s)
        ref["sentences"] = sentences
        ref["sent_ids"] = [s["sent_id"] for s in sentences]
        out.append(ref)
    return write_json(path, out)


class RefCocoDataset(torch.utils.data.Dataset):
    """One item per (ref, sentence): dict(image (3, H, W) float, sentence str, box (4,) xyxy pixels,
    mask (H, W) bool, category_id, ref_id, ann_id, image_id, sent_id, orig_size).

    `refs_file` is the RefCOCO-style JSON, `instances_file` the COCO instances it refers to,
    `root` the image folder; `split` keeps one split ("train", "val", "testA", ...).
    """

    def __init__(self, root: str | Path, refs_file: str | Path, instances_file: str | Path | dict,
                 split: str | None = None, image_size: int | tuple[int, int] | None = None):
        self.root = Path(root)
        refs = json.loads(Path(refs_file).read_text(encoding="utf-8"))
        self.refs = [r for r in refs if split is None or r["split"] == split]
        self.coco = load_coco(instances_file)
        self.items = [(i, j) for i, r in enumerate(self.refs) for j in range(len(r["sentences"]))]
        self.image_size = _as_hw(image_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref_i, sent_i = self.items[index]
        ref = self.refs[ref_i]
        ann = self.coco.anns[ref["ann_id"]]
        info = self.coco.imgs[ref["image_id"]]
        img = read_rgb(self.root / info["file_name"])
        w, h = img.size
        out_h, out_w = self.image_size or (h, w)
        x, y, bw, bh = ann["bbox"]
        box = np.array([x, y, x + bw, y + bh], dtype=np.float32) * np.array([out_w / w, out_h / h] * 2, dtype=np.float32)
        mask = _resize_masks(self.coco.annToMask(ann)[None], self.image_size)[0].astype(bool)
        sentence = ref["sentences"][sent_i]
        return {
            "image": _to_tensor(_resize_image(img, self.image_size)),
            "sentence": sentence["sent"],
            "box": torch.from_numpy(box),
            "mask": torch.from_numpy(mask),
            "category_id": int(ref["category_id"]),
            "ref_id": int(ref["ref_id"]),
            "ann_id": int(ref["ann_id"]),
            "image_id": int(ref["image_id"]),
            "sent_id": int(sentence["sent_id"]),
            "orig_size": (h, w),
        }
