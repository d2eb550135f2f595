"""sLCT training: paper defaults, RAdam in the shared optimiser, the curriculum and c schedule the
step follows, a falling loss, and the shared loop resuming the step counter."""

from __future__ import annotations

import json

import pytest
import torch
from training_loops import fit_one_batch

from zoo.diffusion.consistency import adaptive_c, ict_c
from zoo.models.lct.model import build_model, preset_config
from zoo.models.lct.train import LCTTrainable, LCTTrainConfig, build_task
from zoo.training.optim import build_optimizer
from zoo.training.trainer import Trainer


def _micro(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(preset_config("micro", **overrides))


def _latents(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 4, 8, 8, generator=g)
    return (0.5 * base / base.std()).repeat(n // 4, 1, 1, 1)


def test_paper_defaults_and_radam():
    c = LCTTrainConfig()
    assert (c.optimizer, c.lr, c.weight_decay, c.eps, c.batch_size, c.ema_decay) == ("radam", 1e-4, 1e-4, 1e-4, 128, 0.9999)
    assert (c.loss, c.diffusion_loss_weight, c.diffusion_start, c.ot_coupling, c.adaptive_c) == ("cauchy", 5.0, 0.75, True, True)
    assert (c.start_scales, c.end_scales, c.p_mean, c.p_std, c.grad_clip) == (10, 640, -1.1, 2.0, 0.0)
    opt = build_optimizer(LCTTrainable(_micro(), c), c)
    assert isinstance(opt, torch.optim.RAdam)
    group = opt.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"]) == (1e-4, 1e-4, 1e-4)
    assert c.override({"loss": "pseudo-huber", "ot_coupling": "false"}).ot_coupling is False
    with pytest.raises(ValueError):
        LCTTrainConfig(loss="l2")


def test_schedule_follows_curriculum_and_adaptive_c():
    module = LCTTrainable(_micro(), LCTTrainConfig(steps=700))
    d = 4 * 32 * 32
    assert module.schedule(0, d) == (11, pytest.approx(ict_c(d)))
    assert module.schedule(100, d) == (21, pytest.approx(adaptive_c(21)))
    assert module.schedule(650, d) == (641, pytest.approx(0.00025, rel=0.02))
    fixed = LCTTrainable(_micro(), LCTTrainConfig(steps=700, adaptive_c=False, c=0.01))
    assert fixed.schedule(650, d) == (641, 0.01)
    assert LCTTrainable(_micro(), LCTTrainConfig(steps=10, curriculum_steps=700)).schedule(100, d)[0] == 21


def test_training_step_counts_and_uses_labels():
    model = _micro(num_classes=3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    module = LCTTrainable(model, LCTTrainConfig(steps=100))
    batch = {"latent": _latents(4), "label": torch.tensor([0, 1, 2, 0])}
    torch.manual_seed(5)
    out = module.training_step(batch)
    assert int(module.step) == 1 and "step" in dict(module.named_buffers())
    assert set(out) >= {"loss", "consistency", "diffusion", "early_fraction", "num_scales", "c"}
    assert out["num_scales"] == 11.0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.manual_seed(5)
    other = module.training_step({"latent": batch["latent"], "label": torch.tensor([2, 2, 2, 2])})
    assert other["loss"].item() != pytest.approx(out["loss"].item())


def test_loss_falls_on_a_fixed_objective():
    """30 RAdam updates on one batch with the same noise and noise levels each step (the
    objective is then fixed up to its moving stop-gradient target): the loss falls steadily."""
    module = LCTTrainable(_micro(), LCTTrainConfig(steps=300, lr=3e-3))
    opt = build_optimizer(module, module.config)
    batch = {"latent": _latents(16)}
    losses = fit_one_batch(module, batch, opt, 30, reseed=123)
    assert losses[-1] < 0.95 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 25, losses


class LatentSet(torch.utils.data.Dataset):
    def __init__(self, n=8):
        self.latents = _latents(n)

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i):
        return {"latent": self.latents[i], "label": i % 2}


def _run(tmp_path, name, **kwargs):
    config = LCTTrainConfig(steps=6, batch_size=4, ema_decay=0.9, log_every=1, ckpt_every=3)
    task = build_task(_micro(), LatentSet(), config)
    result = Trainer(task, tmp_path / name, seed=0, progress=False, **kwargs).fit()
    lines = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    return task, result, [line for line in lines if "loss" in line]


def test_shared_loop_runs_and_resumes_the_curriculum(tmp_path):
    task, result, log = _run(tmp_path, "full")
    # K = 6 < 7 stages: one update a stage, N = 11, 21, 41, ...
    assert [line["num_scales"] for line in log] == [11, 21, 41, 81, 161, 321]
    assert [line["c"] for line in log][1:] == pytest.approx([adaptive_c(n) for n in (21, 41, 81, 161, 321)])
    assert int(task.module.step) == 6
    assert result.module is not task.module.model and "step" not in dict(result.module.named_buffers())
    part_task, _, _ = _run(tmp_path, "parts", max_steps_this_run=3)
    assert int(part_task.module.step) == 3
    config = LCTTrainConfig(steps=6, batch_size=4, ema_decay=0.9, log_every=1, ckpt_every=3)
    resumed = build_task(_micro(seed=9), LatentSet(), config)
    Trainer(resumed, tmp_path / "parts", seed=0, progress=False, resume=True).fit()
    assert int(resumed.module.step) == 6
    lines = [json.loads(line) for line in (tmp_path / "parts" / "log.jsonl").read_text().splitlines()]
    parts = [line for line in lines if "loss" in line]
    assert [line["num_scales"] for line in parts] == [11, 21, 41, 81, 161, 321]
    assert [line["loss"] for line in parts] == [line["loss"] for line in log]
