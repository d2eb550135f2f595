"""Task-conditioned training targets from one panoptic annotation (paper Sec. 3.1, "task-conditioned
joint training"; official `data/dataset_mappers/oneformer_unified_dataset_mapper.py`).

Every target of all three tasks derives from the panoptic annotation of the image:

- semantic: one binary mask per class present, the segments of a class merged (things included),
  in the order of each class's first segment;
- instance: one mask per thing segment, stuff dropped;
- panoptic: one mask per segment, things and stuff.

Crowd segments are never targets and segments whose mask is empty (e.g. lost to resizing) are
skipped, as the official mapper does. The text list T_list (Sec. 3.2) holds one "a photo with a
{cls}" per target, ordered by class index (not by target: the official counts targets per class
and writes the class names in class order), and is padded to `num_texts` = N - N_ctx entries
with "a semantic photo" / "an instance photo" / "a panoptic photo" (T_pad; the padded entries
stand for no-object masks). A list longer than `num_texts` is truncated.

The task of an image is drawn uniformly (the official probabilities 0.33 / 0.33 / 0.34) from its
own random stream keyed by (seed, index), so datasets stay deterministic by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.data._rng import rng_for

TASKS = ("semantic", "instance", "panoptic")
PAD_TEXTS = {"semantic": "a semantic photo", "instance": "an instance photo", "panoptic": "a panoptic photo"}


@dataclass
class TaskTargets:
    """One image's targets for one task: `labels` (N,) int64 contiguous classes, `masks` (N, H, W)
    bool, and the padded text list (`num_texts` strings)."""

    task: str
    labels: Tensor
    masks: Tensor
    texts: list[str]


def parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """"semantic,instance,panoptic" (or a list) -> a tuple of known task names, in the given order."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if str(t).strip()]
    if not names:
        raise ValueError("at least one task is needed (semantic, instance, panoptic)")
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; tasks are {', '.join(TASKS)}")
    return tuple(dict.fromkeys(names))


def choose_task(seed: int, index: int, tasks: Sequence[str] = TASKS) -> str:
    """The task of item `index`: uniform over `tasks`, from the stream (seed, "oneformer-task", index)."""
    rng = rng_for(seed, "oneformer-task", index)
    return tasks[int(rng.integers(len(tasks)))]


def text_list(task: str, labels: Sequence[int], class_names: Sequence[str], num_texts: int) -> list[str]:
    """T_pad: "a photo with a {cls}" once per target, in class-index order, padded with the task's entry."""
    counts = [0] * len(class_names)
    for label in labels:
        counts[int(label)] += 1
    texts = [f"a photo with a {name}" for name, count in zip(class_names, counts) for _ in range(count)]
    texts = texts[:num_texts]
    return texts + [PAD_TEXTS[task]] * (num_texts - len(texts))


def build_targets(task: str, masks: Tensor, labels: Tensor, isthing: Tensor, class_names: Sequence[str],
                  num_texts: int) -> TaskTargets:
    """The `task` targets from an image's non-crowd panoptic segments, given in annotation order
    as `masks` (N, H, W) bool, `labels` (N,) contiguous and `isthing` (N,) bool."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    masks = masks.bool()
    keep = masks.flatten(1).any(1)
    if task == "instance":
        keep = keep & isthing.bool()
    masks, labels = masks[keep], labels[keep].long()
    if task == "semantic" and len(labels):
        classes: list[int] = []
        merged: list[Tensor] = []
        for mask, label in zip(masks, labels.tolist()):
            if label in classes:
                merged[classes.index(label)] |= mask
            else:
                classes.append(label)
                merged.append(mask.clone())
        masks, labels = torch.stack(merged), torch.tensor(classes, dtype=torch.int64)
    return TaskTargets(task, labels, masks, text_list(task, labels.tolist(), class_names, num_texts))


def item_targets(item: dict, task: str, class_names: Sequence[str], num_texts: int) -> TaskTargets:
    """`build_targets` on a `zoo.data.coco.CocoPanoptic` item (its crowd segments already left out)."""
    return build_targets(task, item["masks"], item["labels"], item["isthing"], class_names, num_texts)
