"""`zoo bench demo-check`: every bundled example through its model, checked against what it is meant to show.

Every card's examples run through the card's default variant with its bundled weights and must
return the card's result type and draw it. Where an example has a `STEM.expect.json` beside it
(written with its ground truth by `python -m zoo.bench.examples`), the result is also checked:

- `detections`: every object found with its class (IoU >= 0.5 with a detection of that class
  above the card's default score threshold), no spurious detection (one matching no object of its class),
  and no two overlapping boxes (IoU >= 0.7) with different labels;
- `segments`: the requested task (instance) finds every thing: a segment of its class whose
  box has IoU >= 0.5 with the thing's;
- `anomaly`: a defective example's map peaks inside its defect's box (grown by `MARGIN_PX`), and
  the good example scores below every defective one of its card;
- `restoration`: the restored image is closer to the clean original (PSNR) than the input is,
  for each variant the expectation names (the demo's default and the task's own model);
- `text`: every line the prompt asks for is read back exactly by rapidocr from its position in the
  generated (or edited) image, as AnyText's Sen.ACC reads it.

The document lists each example with `passed` and the reasons it failed; `failed` counts them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.bench.common import format_table, machine_info, new_document, write_document
from zoo.bench.examples import expect_path

MATCH_IOU = 0.5
DUPLICATE_IOU = 0.7
MARGIN_PX = 4


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4), xyxy."""
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return tv_box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def check_detections(result: Any, expect: dict[str, Any]) -> list[str]:
    objects = expect["objects"]
    truth = np.asarray([o["box"] for o in objects], dtype=np.float64).reshape(-1, 4)
    names = [result.label_name(int(label)) for label in result.labels]
    iou = box_iou(truth, result.boxes)
    problems = []
    for i, thing in enumerate(objects):
        if not any(iou[i, j] >= MATCH_IOU and names[j] == thing["label"] for j in range(len(names))):
            best = int(iou[i].argmax()) if len(names) else -1
            seen = f"; nearest: {names[best]} IoU {iou[i, best]:.2f}" if best >= 0 and iou[i, best] > 0 else ""
            problems.append(f"{thing['label']} at {[round(v) for v in thing['box']]} not found{seen}")
    for j, name in enumerate(names):
        if not any(iou[i, j] >= MATCH_IOU and thing["label"] == name for i, thing in enumerate(objects)):
            problems.append(f"spurious {name} {result.scores[j]:.2f} at {[round(float(v)) for v in result.boxes[j]]}")
    pair_iou = box_iou(result.boxes, result.boxes)
    for j in range(len(names)):
        for k in range(j + 1, len(names)):
            if pair_iou[j, k] >= DUPLICATE_IOU and names[j] != names[k]:
                problems.append(f"one object boxed twice: {names[j]} and {names[k]} (IoU {pair_iou[j, k]:.2f})")
    return problems


def check_segments(result: Any, expect: dict[str, Any]) -> list[str]:
    boxes, labels = [], []
    for segment in result.segments:
        ys, xs = np.nonzero(result.segment_map == int(segment["id"]))
        if len(xs) == 0:
            continue
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        label = int(segment.get("label", -1))
        labels.append(result.class_names[label] if result.class_names and 0 <= label < len(result.class_names) else str(label))
    iou = box_iou(np.asarray([o["box"] for o in expect["objects"]], dtype=np.float64).reshape(-1, 4),
                  np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    problems = []
    for i, thing in enumerate(expect["objects"]):
        if not any(iou[i, j] >= MATCH_IOU and labels[j] == thing["label"] for j in range(len(labels))):
            problems.append(f"{thing['label']} at {[round(v) for v in thing['box']]} not segmented")
    return problems


def check_anomaly(result: Any, expect: dict[str, Any]) -> list[str]:
    if "defect_box" not in expect:
        return []  # the good example is checked against its card's defective ones (check_ranking)
    x0, y0, x1, y1 = expect["defect_box"]
    peak_y, peak_x = np.unravel_index(int(np.argmax(result.map)), result.map.shape)
    inside = x0 - MARGIN_PX <= peak_x < x1 + MARGIN_PX and y0 - MARGIN_PX <= peak_y < y1 + MARGIN_PX
    return [] if inside else [f"map peaks at ({peak_x}, {peak_y}), outside the {expect['defect']} at {expect['defect_box']}"]


def check_restoration(result: Any, expect: dict[str, Any], given: np.ndarray) -> list[str]:
    from zoo.imageio import load_image

    clean = np.asarray(load_image(expect["clean"]), dtype=np.float64) / 255.0
    restored = np.asarray(result.images[0], dtype=np.float64) / 255.0
    before, after = _psnr(given / 255.0, clean), _psnr(restored, clean)
    return [] if after > before else [f"PSNR {before:.2f} -> {after:.2f} dB: the {expect['task']} model lowers it"]


def check_text(result: Any, expect: dict[str, Any]) -> list[str]:
    from zoo.models.anytext.metrics import read_lines

    lines, positions = result.info["lines"], [np.asarray(p, np.float32) for p in result.info["positions"]]
    if "lines" in expect and list(expect["lines"]) != list(lines):
        return [f"the prompt asked for {lines}, the example expects {expect['lines']}"]
    read = read_lines(np.asarray(result.images[0]), positions)
    return [f"{want!r} reads as {got!r}" for want, got in zip(lines, read) if got != want]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


CHECKS = {"detections": check_detections, "segments": check_segments, "anomaly": check_anomaly, "text": check_text}
CHECKS_WITH_INPUT = {"restoration": check_restoration}


def check_ranking(entries: list[dict[str, Any]]) -> None:
    """Anomaly cards: the good example must score below every defective example."""
    good = [e for e in entries if e.get("defect") == "good"]
    bad = [e for e in entries if e.get("defect") not in (None, "good")]
    for entry in good:
        above = [e["example"] for e in bad if e["score"] <= entry["score"]]
        if above:
            entry["problems"].append(f"scores {entry['score']:.3f}, not below {', '.join(above)}")
            entry["passed"] = False


def _options(card: Any, expect: dict[str, Any]) -> dict[str, Any]:
    names = {option.name for option in card.options}
    return {"task": expect["task"]} if "task" in expect and "task" in names else {}


def check_card(card: Any, variant: str | None = None) -> list[dict[str, Any]]:
    """Run and check each example of one card; one entry per example and variant."""
    from zoo.registry import create_model

    if not card.examples:
        return []
    default = variant or card.default_variant
    pipelines: dict[str, Any] = {}
    entries = []
    for example in card.examples:
        expect_file = expect_path(example) if not str(example).startswith("skimage:") else None
        expect = json.loads(expect_file.read_text()) if expect_file is not None and expect_file.exists() else {}
        for name in expect.get("variants", [default]):
            if name not in pipelines:
                pipelines[name] = create_model(card.name, name)
            entries.append(_check_example(card, pipelines[name], name, example, expect))
    check_ranking(entries)
    return entries


def _check_example(card: Any, pipeline: Any, variant: str, example: str, expect: dict[str, Any]) -> dict[str, Any]:
    from zoo.imageio import load_image

    start = time.perf_counter()
    problems: list[str] = []
    entry: dict[str, Any] = {"model": card.name, "variant": variant, "example": Path(example).name, "check": expect.get("check", "runs")}
    try:
        image = load_image(example)
        result = pipeline.predict(card.example_input(example), **_options(card, expect))
        result.draw(image) if _draw_takes_image(result) else result.draw()
        if "clean" in expect and not str(expect["clean"]).startswith("skimage:"):
            expect = {**expect, "clean": str(Path(example).with_name(expect["clean"]))}  # a reference beside the example
        if expect.get("check") in CHECKS_WITH_INPUT:
            problems += CHECKS_WITH_INPUT[expect["check"]](result, expect, np.asarray(image, dtype=np.float64))
        elif expect:
            problems += CHECKS[expect["check"]](result, expect)
        if hasattr(result, "score"):
            entry["score"] = float(result.score)
        if "defect" in expect:
            entry["defect"] = expect["defect"]
    except Exception as error:  # a demo example that raises is the worst failure of all
        problems.append(f"{type(error).__name__}: {error}")
    entry.update(problems=problems, passed=not problems, seconds=round(time.perf_counter() - start, 3))
    return entry


def _draw_takes_image(result: Any) -> bool:
    import inspect

    params = list(inspect.signature(result.draw).parameters)
    return bool(params) and params[0] == "image"


def run(quick: bool = False, out_dir: Path | None = None, models: list[str] | None = None, command: str | None = None, **_: Any) -> dict[str, Any]:
    """Check every card with bundled examples (or `models`); writes demo-check-<date>.json under out_dir."""
    from zoo.registry import list_models

    document = new_document("demo-check", quick=quick, machine=machine_info(), command=command)
    entries = []
    for card in list_models():
        if models and card.name not in models:
            continue
        entries += check_card(card)
    document.update(examples=entries, checked=len(entries), failed=sum(not e["passed"] for e in entries))
    if out_dir is not None:
        write_document(document, out_dir, Path(out_dir) / f"demo-check-cpu-{document['date']}.json")
    return document


def render(document: dict[str, Any]) -> str:
    rows = [[e["model"], e["variant"], e["example"], e["check"], "pass" if e["passed"] else "FAIL", "; ".join(e["problems"])[:100]]
            for e in document["examples"]]
    table = format_table(rows, ["model", "variant", "example", "check", "result", "problems"])
    return f"{table}\n{document['checked']} examples, {document['failed']} failed"
