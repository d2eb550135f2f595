"""ViDT's sine position encoding and the ViDT+ citations: what the docstrings claim matches the code.

The ViDT+ paper's (arXiv 2204.07962) section numbers could not be checked offline, so its parts are
cited by module name ("Efficient Pyramid Feature Fusion", "Unified Query Representation", the
IoU-aware and token-labeling losses) in every file, never by a number that may disagree.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

import zoo.nn.position_encoding as position_encoding
from zoo.models.vidt.model import SwinRAM

ROOT = Path(__file__).resolve().parents[2]
VIDT_PLUS_FILES = ["zoo/models/vidt/model.py", "zoo/models/vidt/loss.py", "zoo/models/vidt/dct.py",
                   "zoo/models/vidt/__init__.py", "bench/ablation.py"]


def test_vidt_cross_attention_position_has_no_half_pixel_offset():
    # official masked_sin_pos_encoding (methods/swin_w_ram.py): x / x_max * 2 pi, no -0.5
    pos, mask = SwinRAM._cross_inputs(None, torch.zeros(1, 1, 4), (1, 4), dim=4, det_tokens=2)
    assert mask is None and pos.shape == (1, 1, 4, 4)
    for col in range(4):
        x = (col + 1) / 4 * 2 * math.pi
        assert math.isclose(pos[0, 0, col, 2].item(), math.sin(x), abs_tol=1e-5)  # channels [y sin, y cos, x sin, x cos]
    doc = position_encoding.__doc__
    assert "ViDT" in doc
    clause = doc[: doc.index("(y - 0.5)")].rsplit(";", 1)[-1]  # who the docstring says uses -0.5
    assert "Deformable DETR" in clause and "ViDT" not in clause, clause


def test_vidt_plus_is_cited_by_module_name_not_section_number():
    pattern = re.compile(r"(ViDT\+|2204\.07962)[^;\n]*?Sec\.\s*\d")
    offenders = []
    for rel in VIDT_PLUS_FILES:
        for n, line in enumerate((ROOT / rel).read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
