"""OneFormer training: paper defaults, optimiser groups, the task-conditioned data, a short falling run."""

from __future__ import annotations

import math

import pytest
import torch
from training_loops import fit_one_batch

from zoo.models.oneformer.model import OneFormer, preset_config
from zoo.models.oneformer.targets import TASKS
from zoo.models.oneformer.train import OneFormerTrainable, OneFormerTrainConfig, build_task, collate, param_groups

FAST = dict(batch_size=2, train_images=4, val_images=2, num_points=512, samples_per_epoch=64, eval_batch_size=2)


def _micro(seed: int = 0) -> OneFormer:
    torch.manual_seed(seed)
    return OneFormer(preset_config("micro"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A workdir whose procedural data (4 train, 2 val scenes) the tests share."""
    workdir = tmp_path_factory.mktemp("oneformer")
    build_task(_micro(), "synthetic", OneFormerTrainConfig(**FAST), seed=0, workdir=workdir)
    return workdir


def test_paper_defaults():
    c = OneFormerTrainConfig()
    assert (c.optimizer, c.lr, c.weight_decay, c.batch_size, c.steps) == ("adamw", 1e-4, 0.05, 16, 160_000)
    assert (c.schedule, c.lr_power, c.backbone_lr_mult, c.grad_clip) == ("poly", 0.9, 0.1, 0.01)
    assert (c.class_weight, c.mask_weight, c.dice_weight, c.contrastive_weight, c.no_object_weight) == (2.0, 5.0, 5.0, 0.5, 0.1)
    assert (c.num_points, c.oversample_ratio, c.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert c.tasks == "semantic,instance,panoptic"
    assert c.override({"tasks": "panoptic", "contrastive_weight": "0"}).contrastive_weight == 0.0


def test_param_groups():
    config = OneFormerTrainConfig()
    task_module = OneFormerTrainable(_micro(), config)
    groups = param_groups(task_module, config)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(task_module.parameters()))
    backbone = {id(p) for p in task_module.model.backbone.parameters()}
    for group in groups:
        in_backbone = [id(p) in backbone for p in group["params"]]
        assert all(in_backbone) or not any(in_backbone)
        assert group["lr"] == pytest.approx(1e-5 if in_backbone[0] else 1e-4)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    model = task_module.model
    norm = next(m for m in model.pixel_decoder.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)))
    assert decay[id(norm.weight)] == 0.0
    assert decay[id(model.text_mapper.prompt_ctx.weight)] == 0.0  # an embedding
    assert decay[id(model.task_mlp.layers[0].weight)] == 0.05
    tables = [p for n, p in model.backbone.named_parameters() if n.endswith("relative_position_bias_table")]
    assert tables and all(decay[id(p)] == 0.0 for p in tables)


def test_dataset_items(shapes):
    model = _micro()
    task = build_task(model, "synthetic", OneFormerTrainConfig(**FAST), seed=0, workdir=shapes)
    data = task.dataset
    assert len(data) == 64
    a, again = data[5], data[5]
    assert torch.equal(a["image"], again["image"]) and a["task"] == again["task"] and torch.equal(a["masks"], again["masks"])
    assert a["image"].shape == (3, 128, 128) and a["task_tokens"].shape == (77,)
    assert a["text_tokens"].shape == (model.config.num_queries - model.config.n_ctx, 77)
    assert a["masks"].shape[1:] == (128, 128) and len(a["labels"]) == len(a["masks"])
    tasks = [data[i]["task"] for i in range(24)]
    assert set(tasks) == set(TASKS)
    # items i and i + 4 show the same scene; with different flips they mirror each other
    pairs = [(i, i + 4) for i in range(0, 40, 4)]
    flipped = [(i, j) for i, j in pairs if not torch.equal(data[i]["image"], data[j]["image"])]
    assert flipped, "no flipped pair among 10"
    i, j = flipped[0]
    assert torch.allclose(data[i]["image"], data[j]["image"].flip(-1))
    # instance targets hold things only, semantic one mask per class
    thing = set(model.config.thing_classes)
    for k in range(24):
        item = data[k]
        if item["task"] == "instance":
            assert set(item["labels"].tolist()) <= thing
        if item["task"] == "semantic":
            assert len(set(item["labels"].tolist())) == len(item["labels"])
    batch = collate([data[0], data[1]])
    assert batch["images"].shape == (2, 3, 128, 128) and batch["text_tokens"].shape[:2] == (2, 20)
    assert len(batch["targets"]) == 2


def test_short_run_loss_falls(shapes):
    model = _micro()
    config = OneFormerTrainConfig(**FAST)
    task = build_task(model, "synthetic", config, seed=0, workdir=shapes)
    optimizer = torch.optim.AdamW(param_groups(task.module, config.override({"lr": "1e-3"})))
    batch = collate([task.dataset[i] for i in range(2)])
    torch.manual_seed(0)
    losses = fit_one_batch(task.module, batch, optimizer, 20)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    out = task.module.training_step(batch)  # one more step, to read the terms it logs
    assert {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_contrastive"} <= set(out)
    metrics = task.evaluate(task.module)
    assert set(metrics) == {"pq", "sq", "rq", "pq_things", "pq_stuff", "miou", "mask_ap", "mask_ap50"}
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in metrics.values())
    assert task.to_pipeline(task.module) is model and model.training


def test_contrastive_off_and_single_task(shapes):
    model = _micro()
    task = build_task(model, "synthetic", OneFormerTrainConfig(**FAST, contrastive_weight=0.0, tasks="instance"),
                      seed=0, workdir=shapes)
    assert task.extra["ddp_find_unused_parameters"] and task.extra["tasks"] == ["instance"]
    assert {task.dataset[i]["task"] for i in range(8)} == {"instance"}
    out = task.module.training_step(collate([task.dataset[i] for i in range(2)]))
    assert "loss_contrastive" not in out
    out["loss"].backward()
    assert model.text_mapper.text_projector.layers[0].weight.grad is None
    assert model.task_mlp.layers[0].weight.grad is not None


def test_through_the_shared_loop(shapes, tmp_path):
    import json

    from zoo.training import Trainer

    config = OneFormerTrainConfig(**FAST, steps=3, log_every=1, ckpt_every=100)
    task = build_task(_micro(), "synthetic", config, seed=0, workdir=shapes)
    result = Trainer(task, tmp_path / "run", seed=0, progress=False).fit()
    assert result.completed and result.steps_done == 3
    assert "pq" in result.metrics and "miou" in result.metrics
    lines = [json.loads(row) for row in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if row.strip()]
    assert any("loss_contrastive" in line for line in lines)


def test_user_folder(tmp_path, shapes):
    root = shapes / "data" / "shapes"
    meta = (root / "meta.json").stat().st_mtime_ns
    build_task(_micro(), "synthetic", OneFormerTrainConfig(**FAST), seed=0, workdir=shapes)
    assert (root / "meta.json").stat().st_mtime_ns == meta  # the procedural data was reused, not rewritten
    task = build_task(_micro(), str(root), OneFormerTrainConfig(**FAST), seed=0, workdir=tmp_path / "run")
    assert task.extra["data"] == str(root) and len(task.extra["validation"]) == 2
    with pytest.raises(FileNotFoundError):
        build_task(_micro(), str(tmp_path / "nothing"), OneFormerTrainConfig(**FAST), seed=0, workdir=tmp_path / "run")
    from dataclasses import replace

    other = OneFormer(replace(preset_config("micro"), num_classes=5, class_names=("a",) * 5, thing_classes=(0,)))
    with pytest.raises(ValueError, match="categories"):
        build_task(other, str(root), OneFormerTrainConfig(**FAST), seed=0, workdir=tmp_path / "run")


def test_quality_bench_scores_each_weights_file_at_both_thresholds(tmp_path):
    import json

    from zoo.bench.oneformer_quality import THRESHOLDS, main
    from zoo.registry import build_pipeline, variant_config
    from zoo.weights import save_weights

    torch.manual_seed(0)
    pipeline = build_pipeline("oneformer", config=variant_config("oneformer", "micro"))
    weights = save_weights(pipeline.model, tmp_path / "random.safetensors", {"model": "oneformer", "variant": "micro"})
    assert main(["--weights", str(weights), "--scenes", "2", "--workdir", str(tmp_path / "scenes"), "--out", str(tmp_path)]) == 0
    document = json.loads(next(tmp_path.glob("oneformer-quality-2scenes-*.json")).read_text())
    assert document["scenes"] == {"count": 2, "seed": 0, "split": "val", "image_size": 128}
    by_threshold = document["results"][str(weights)]
    assert set(by_threshold) == {str(t) for t in THRESHOLDS}
    for metrics in by_threshold.values():
        assert {"pq", "pq_things", "pq_stuff", "miou", "mask_ap"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 100.0 for k in ("pq", "miou"))
    # the scenes are the val split of seed 0, generated once (no training split)
    meta = json.loads((tmp_path / "scenes" / "seed0-2" / "data" / "shapes" / "meta.json").read_text())
    assert meta["splits"] == {"train": 0, "val": 2} and meta["seed"] == 0


def test_quality_bench_refuses_a_missing_weights_file(tmp_path, capsys):
    from zoo.bench.oneformer_quality import main

    with pytest.raises(SystemExit):
        main(["--weights", str(tmp_path / "nope.safetensors")])
    assert "no such weights file" in capsys.readouterr().err
