"""ViDT / ViDT+ training: official defaults, parameter groups, deterministic letterboxed items with flips,
label modes, a short run through the shared loop whose loss falls, ViDT+ gradients reach every head."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from zoo.models.vidt.model import ViDT, preset_config
from zoo.models.vidt.train import ViDTTrainConfig, build_task, collate, label_mode, param_groups
from zoo.nn.box_ops import box_cxcywh_to_xyxy, masks_to_boxes


def _micro(plus: bool = False, seed: int = 0) -> ViDT:
    torch.manual_seed(seed)
    return ViDT(preset_config("micro", plus=plus))


def test_official_defaults():
    c = ViDTTrainConfig()
    assert (c.optimizer, c.lr, c.backbone_lr, c.weight_decay, c.grad_clip, c.batch_size) == ("adamw", 1e-4, 1e-4, 1e-4, 0.1, 16)
    assert c.schedule == "cosine" and c.lr_milestones == (0.8,)
    assert c.steps == 50 * 7393


def test_param_groups_split_backbone_and_no_decay():
    model = _micro()
    config = ViDTTrainConfig(lr=2e-4, backbone_lr=3e-5)
    module = torch.nn.Module()
    module.model = model
    groups = param_groups(module, config)
    assert [g["lr"] for g in groups] == [2e-4, 3e-5, 3e-5]
    assert groups[1]["weight_decay"] == 0.0 and "weight_decay" not in groups[2]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert id(model.class_embed[0].weight) in ids[0]
    assert id(model.backbone.det_token) in ids[1]
    backbone = {id(p) for p in model.backbone.parameters()}
    assert ids[1] | ids[2] == backbone and not ids[0] & backbone
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_items_letterboxed_and_flipped(tmp_path):
    model = _micro(plus=True)
    config = ViDTTrainConfig(train_images=2, val_images=1)
    task = build_task(model, "synthetic", config, seed=0, workdir=tmp_path)
    assert (tmp_path / "data" / "annotations" / "instances_train.json").is_file()
    assert len(task.dataset) == 4  # every image twice, the second time flipped
    image, target = task.dataset[0]
    flipped, ftarget = task.dataset[2]
    assert image.shape == (3, 128, 128)
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(ftarget["masks"], target["masks"].flip(-1))
    mirrored = target["boxes"].clone()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    assert torch.allclose(ftarget["boxes"], mirrored, atol=1e-6)
    assert target["labels"].min() >= 0 and target["labels"].max() < 6
    # the normalised boxes are the masks' tight boxes on the 128 canvas (polygon round trip: within 1.5 px)
    boxes = box_cxcywh_to_xyxy(target["boxes"]) * 128
    assert (boxes - masks_to_boxes(target["masks"])).abs().max() < 1.5
    # deterministic by index; the same folder is reused when its meta matches
    again = build_task(_micro(plus=True), "synthetic", config, seed=0, workdir=tmp_path)
    assert torch.equal(again.dataset[1][0], task.dataset[1][0])


def test_label_modes():
    def coco(ids):
        return SimpleNamespace(categories=[{"id": i, "name": str(i)} for i in ids])

    assert label_mode(coco(range(1, 7)), 6) is False  # shapes on micro: contiguous 0..5
    assert label_mode(coco([1, 2, 3, 90]), 91) is True  # COCO ids on the official 91-way head
    with pytest.raises(ValueError, match="7 categories"):
        label_mode(coco(range(1, 8)), 6)


def test_short_run_loss_falls(tmp_path):
    from zoo.training import Trainer

    config = ViDTTrainConfig(steps=20, batch_size=4, lr=2e-4, backbone_lr=2e-4, schedule="constant", log_every=1,
                             ckpt_every=1000, train_images=2, val_images=2, eval_batch_size=2)
    task = build_task(_micro(), "synthetic", config, seed=0, workdir=tmp_path)
    result = Trainer(task, tmp_path / "run", seed=0, progress=False).fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 20
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    assert {"box_AP", "box_AP50", "box_AP75"} <= set(result.metrics)
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("box_AP", "box_AP50"))


def test_plus_step_reaches_every_head(tmp_path):
    model = _micro(plus=True)
    config = ViDTTrainConfig(train_images=2, val_images=1)
    task = build_task(model, "synthetic", config, seed=0, workdir=tmp_path)
    out = task.module.training_step(collate([task.dataset[i] for i in range(2)]))
    for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_iouaware", "loss_vector", "loss_token_focal", "loss_token_dice"):
        assert torch.isfinite(out[key]), key
    assert not any(k.rpartition("_")[2].isdigit() for k in out)  # aux terms only enter the total
    out["loss"].backward()
    assert model.vector_embed.layers[-1].weight.grad.abs().sum() > 0
    assert model.iou_embed[0].layers[-1].weight.grad.abs().sum() > 0
    assert model.backbone.det_token.grad.abs().sum() > 0
    metrics = task.evaluate(task.module)
    assert {"box_AP", "mask_AP"} <= set(metrics)


def test_quality_bench_ranks_trained_weights_above_random(tmp_path):
    """bench/vidt_quality.py scores weights side by side on the same held-out scenes (seed 0's val split):
    the bundled demo weights beat random ones; ViDT+ adds mask AP."""
    from zoo.bench.vidt_quality import main
    from zoo.registry import build_pipeline, get_card, variant_config
    from zoo.weights import save_weights

    torch.manual_seed(0)
    random_vidt = save_weights(build_pipeline("vidt", config=variant_config("vidt", "micro")).model, tmp_path / "random.safetensors",
                               {"model": "vidt", "variant": "micro"})
    bundled = get_card("vidt").demo_weights_path("micro")
    scenes = ["--scenes", "4", "--workdir", str(tmp_path / "scenes"), "--out", str(tmp_path)]
    assert main(["--weights", str(bundled), "--weights", str(random_vidt), *scenes]) == 0
    results = json.loads(next(tmp_path.glob("vidt-quality-vidt-4scenes-*.json")).read_text())["results"]
    assert results[str(bundled)]["box_AP50"] > results[str(random_vidt)]["box_AP50"] + 0.2
    assert "mask_AP" not in results[str(bundled)]
    plus = get_card("vidt-plus").demo_weights_path("micro")
    assert main(["--model", "vidt-plus", "--weights", str(plus), *scenes]) == 0
    results = json.loads(next(tmp_path.glob("vidt-quality-vidt-plus-4scenes-*.json")).read_text())["results"]
    assert 0.0 < results[str(plus)]["mask_AP"] <= 1.0
    meta = json.loads((tmp_path / "scenes" / "seed0-4" / "data" / "shapes" / "meta.json").read_text())
    assert meta["splits"] == {"train": 0, "val": 4} and meta["seed"] == 0
