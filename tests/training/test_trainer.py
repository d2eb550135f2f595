"""The shared training loop on a toy regression task (CPU, a few ms a step)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask
from zoo.training import EMA, NonFiniteLossError, ResumableBatchSampler, RunExistsError, Trainer, lr_multiplier
from zoo.training import checkpoint as ckpt
from zoo.training.data import train_loader

W_TRUE = torch.tensor([[1.5, -2.0, 0.5, 3.0]])


class ToyData(torch.utils.data.Dataset):
    """y = x . w + small noise; item i is a pure function of i."""

    def __init__(self, n: int = 64):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(index)
        x = torch.randn(4, generator=g)
        y = x @ W_TRUE[0] + 0.01 * torch.randn((), generator=g)
        return {"x": x, "y": y.reshape(1), "index": torch.tensor(index)}


class ToyRegressor(nn.Module):
    """A linear model whose training step draws from all three global RNGs (torch, numpy,
    random), so resume must restore each of them; `fail_at` injects a failure at a call."""

    def __init__(self, seed: int = 0, fail_at: int | None = None, failure: str = "interrupt"):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(4, 1)
        self.register_buffer("offset", torch.zeros(1))
        self.fail_at, self.failure, self.calls = fail_at, failure, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.linear(x)
        self.output_dtype = hidden.dtype
        return hidden + self.offset

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.fail_at and self.failure == "interrupt":
            raise KeyboardInterrupt
        x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
        scale = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        mse = (self(x) - batch["y"]).pow(2).mean() * scale
        if self.calls == self.fail_at and self.failure == "nan":
            mse = mse * float("nan")
        return {"loss": mse, "mse": mse.detach(), "abs": (self(x) - batch["y"]).abs().mean().detach()}


def make_task(**overrides) -> TrainTask:
    module_args = {k: overrides.pop(k) for k in ("fail_at", "failure") if k in overrides}
    config = replace(TrainConfig(steps=12, batch_size=8, lr=0.05, log_every=1, ckpt_every=4), **overrides)
    return TrainTask(module=ToyRegressor(**module_args), dataset=ToyData(), config=config)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["abs"]) for r in read_log(out) if "loss" in r]


RESUME_CONFIG = dict(ema_decay=0.9, schedule="step", lr_milestones=(0.5, 0.75), warmup_steps=2, grad_clip=1.0,
                     optimizer="adamw", weight_decay=0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An uninterrupted run with EMA, warmup + step schedule and clipping."""
    out = tmp_path_factory.mktemp("reference")
    result = Trainer(make_task(**RESUME_CONFIG), out, seed=3, progress=False).fit()
    assert result.completed and result.steps_done == 12
    return out, {k: v.clone() for k, v in result.module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- optimisation


def test_loss_falls(tmp_path):
    result = Trainer(make_task(steps=100, lr=0.1, log_every=10, ckpt_every=0), tmp_path, progress=False).fit()
    logged = losses(tmp_path)
    assert [s for s, _, _ in logged] == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert logged[-1][1] < 0.01 * logged[0][1]
    weight = result.module.linear.weight.detach()
    assert torch.allclose(weight, W_TRUE, atol=0.1)
    record = read_log(tmp_path)[-1]
    assert {"step", "loss", "mse", "abs", "lr", "it_s", "time"} <= record.keys()


def test_lr_multiplier_hand_values():
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="cosine")
    assert lr_multiplier(0, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, cfg) == pytest.approx(1.0)
    assert lr_multiplier(55, cfg) == pytest.approx(0.5)  # t = 45 / 90
    assert lr_multiplier(100, cfg) == pytest.approx(0.0)
    poly = replace(cfg, schedule="poly", lr_power=0.9)
    assert lr_multiplier(55, poly) == pytest.approx(0.5 ** 0.9)
    step = TrainConfig(steps=100, schedule="step", lr_milestones=(0.5, 0.75), lr_gamma=0.1)
    assert [lr_multiplier(s, step) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_multiplier(42, TrainConfig(steps=100)) == 1.0


def test_schedule_drives_the_optimiser(tmp_path):
    task = make_task(steps=8, lr=0.1, warmup_steps=2, schedule="step", lr_milestones=(0.5,), lr_gamma=0.1)
    Trainer(task, tmp_path, progress=False).fit()
    logged = [r["lr"] for r in read_log(tmp_path) if "lr" in r]
    assert logged == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


def test_gradient_clipping_bounds_the_update(tmp_path):
    def one_sgd_step(clip: float, out: Path) -> float:
        task = make_task(steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=clip)
        before = [p.detach().clone() for p in task.module.parameters()]
        Trainer(task, out, progress=False).fit()
        return math.sqrt(sum((p.detach() - b).pow(2).sum().item() for p, b in zip(task.module.parameters(), before)))

    unclipped = one_sgd_step(0.0, tmp_path / "free")
    assert unclipped > 2.0  # the toy's first gradient is large
    assert one_sgd_step(0.5, tmp_path / "clipped") == pytest.approx(0.5, rel=1e-5)
    assert read_log(tmp_path / "clipped")[0]["grad_norm"] == pytest.approx(unclipped, rel=1e-5)


def test_ema_hand_case():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = EMA(module, 0.9, module.parameters())
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema.update(module)
    assert ema.module.weight.item() == pytest.approx(0.1, abs=1e-7)  # 0.9 * 0 + 0.1 * 1
    ema.update(module)
    assert ema.module.weight.item() == pytest.approx(0.19, abs=1e-7)  # 0.9 * 0.1 + 0.1 * 1
    assert not ema.module.weight.requires_grad


def test_trainer_returns_the_ema_weights(tmp_path):
    task = make_task(steps=10, ema_decay=0.8)
    tracked = [p.detach().double().clone() for p in task.module.parameters()]

    def track(trainer, step, values):
        for avg, p in zip(tracked, trainer.module.parameters()):
            avg.mul_(0.8).add_(p.detach().double(), alpha=0.2)

    result = Trainer(task, tmp_path, progress=False, callbacks=[track]).fit()
    for avg, p, live in zip(tracked, result.module.parameters(), task.module.parameters()):
        assert torch.allclose(p.double(), avg, atol=1e-6)
        assert not torch.allclose(p, live)  # the EMA lags the live weights


def test_amp_bf16_on_cpu(tmp_path):
    task = make_task(steps=40, lr=0.1, amp=True, log_every=10)
    Trainer(task, tmp_path, progress=False).fit()
    assert task.module.output_dtype == torch.bfloat16  # autocast was on
    assert task.module.linear.weight.dtype == torch.float32  # weights stay fp32
    logged = losses(tmp_path)
    assert all(math.isfinite(loss) for _, loss, _ in logged)
    assert logged[-1][1] < 0.2 * logged[0][1]


# --------------------------------------------------------------------------- data order


def test_sampler_is_seeded_resumable_and_sharded():
    full = ResumableBatchSampler(20, 3, seed=7)
    assert full.batches_per_epoch == 6
    stream = iter(full)
    first = [next(stream) for _ in range(15)]  # two and a half epochs
    assert sorted(sum(first[:6], [])) == sorted(full.epoch_order(0)[:18].tolist())
    assert first[:6] != first[6:12]  # a new order every epoch
    resumed = iter(ResumableBatchSampler(20, 3, seed=7, start_epoch=1, start_batch=2))
    assert [next(resumed) for _ in range(7)] == first[8:15]
    assert iter(ResumableBatchSampler(20, 3, seed=8)).__next__() != first[0]
    ranks = [ResumableBatchSampler(20, 3, seed=7, rank=r, world_size=2) for r in (0, 1)]
    order = full.epoch_order(0).tolist()
    for r, sampler in enumerate(ranks):
        assert sum(sampler.rank_batches(0), []) == order[r::2][:9]
    with pytest.raises(ValueError, match="not one full batch"):
        ResumableBatchSampler(5, 3, seed=0, world_size=2)


# --------------------------------------------------------------------------- resume and checkpoints


def test_interrupted_and_resumed_run_logs_identical_losses(tmp_path, reference):
    ref_out, ref_state = reference

    def stop_at_5(trainer, step, values):
        if step == 5:
            trainer.request_stop()

    first = Trainer(make_task(**RESUME_CONFIG), tmp_path, seed=3, progress=False, callbacks=[stop_at_5]).fit()
    assert not first.completed and first.steps_done == 5 and first.metrics == {}
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-000005.pt"
    second = Trainer(make_task(**RESUME_CONFIG), tmp_path, seed=3, resume=True, progress=False,
                     max_steps_this_run=2).fit()
    assert second.steps_done == 7 and not second.completed
    final = Trainer(make_task(**RESUME_CONFIG), tmp_path, seed=3, resume=True, progress=False).fit()
    assert final.completed and final.steps_done == 12
    assert losses(tmp_path) == losses(ref_out)  # bitwise: JSON floats round-trip exactly
    assert_same_state(final.module.state_dict(), ref_state)


def test_checkpoints_load_with_weights_only_and_are_pruned(tmp_path, reference):
    ref_out, _ = reference
    folder = ref_out / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["last.pt", "step-000008.pt", "step-000012.pt"]  # the latest two, no temp files
    assert (folder / "last.pt").resolve() == (folder / "step-000012.pt").resolve()
    state = torch.load(folder / "last.pt", weights_only=True)
    assert state["step"] == 12 and state["data"] == {"epoch": 1, "batch": 4}  # 8 batches an epoch
    assert {"model", "optimizer", "scheduler", "ema", "scaler", "rng", "config"} <= state.keys()
    assert state["ema"]["linear.weight"].shape == (1, 4)
    assert len(state["rng"]) == 1  # one entry a rank
    ckpt.restore_rng(state["rng"][0])
    after = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    ckpt.restore_rng(state["rng"][0])
    assert torch.equal(after[0], torch.rand(3))
    assert np.array_equal(after[1], np.random.rand(3))
    assert after[2] == [random.random() for _ in range(3)]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint({"step": 1}, tmp_path, 1)

    def broken_save(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"step": 2}, tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-000001.pt"]
    assert torch.load(tmp_path / "last.pt", weights_only=True) == {"step": 1}
    assert good.exists()


def test_keyboard_interrupt_saves_then_resume_matches(tmp_path, reference):
    ref_out, ref_state = reference
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_task(**RESUME_CONFIG, fail_at=7), tmp_path, seed=3, progress=False).fit()
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-000006.pt"
    final = Trainer(make_task(**RESUME_CONFIG), tmp_path, seed=3, resume=True, progress=False).fit()
    assert losses(tmp_path) == losses(ref_out)
    assert_same_state(final.module.state_dict(), ref_state)


def test_ctrl_c_finishes_the_step_and_saves(tmp_path):
    def press_ctrl_c(trainer, step, values):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    # Python's own handler first: a shell that starts the tests in the background ignores SIGINT
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            Trainer(make_task(), tmp_path, progress=False, callbacks=[press_ctrl_c]).fit()
        assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-000003.pt"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer restored it
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_nan_loss_stops_after_saving_the_last_good_state(tmp_path):
    with pytest.raises(NonFiniteLossError, match="nan at step 6"):
        Trainer(make_task(fail_at=6, failure="nan"), tmp_path, progress=False).fit()
    found = [step for step, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert found == [4, 5]
    assert max(r["step"] for r in read_log(tmp_path)) == 5
    state = torch.load(tmp_path / "checkpoints" / "step-000005.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_resume_errors_and_finished_runs(tmp_path, reference):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(make_task(), tmp_path / "empty", resume=True, progress=False).fit()
    ref_out, ref_state = reference
    with pytest.raises(RunExistsError, match="already holds a run"):
        Trainer(make_task(**RESUME_CONFIG), ref_out, seed=3, progress=False).fit()
    log_before = (ref_out / "log.jsonl").read_text()
    again = Trainer(make_task(**RESUME_CONFIG), ref_out, seed=3, resume=True, progress=False).fit()
    assert again.completed and again.steps_done == 12
    assert_same_state(again.module.state_dict(), ref_state)
    assert (ref_out / "log.jsonl").read_text() == log_before


# --------------------------------------------------------------------------- task hooks


def test_setup_eval_finalize_and_pipeline_hooks(tmp_path):
    calls = {"setup": 0, "evaluate": 0}

    def setup(module, loader):
        calls["setup"] += 1
        ys = torch.cat([batch["y"] for batch in loader])
        assert ys.shape == (64, 1)  # one ordered pass over every item
        module.offset.fill_(float(ys.mean()))

    def evaluate(module):
        calls["evaluate"] += 1
        assert not module.training and not torch.is_grad_enabled()
        return {"weight_error": float((module.linear.weight - W_TRUE).abs().max())}

    def finalize(module):
        module.offset.add_(1.0)
        return {"offset": float(module.offset)}

    def build(**cfg):
        task = make_task(steps=6, eval_every=2, ema_decay=0.5, **cfg)
        return replace(task, setup=setup, evaluate=evaluate, finalize=finalize,
                       to_pipeline=lambda m: nn.Sequential(m))

    def stop_at_3(trainer, step, values):
        if step == 3:
            trainer.request_stop()

    Trainer(build(), tmp_path, progress=False, callbacks=[stop_at_3]).fit()
    assert calls == {"setup": 1, "evaluate": 1}
    result = Trainer(build(), tmp_path, resume=True, progress=False).fit()
    assert calls == {"setup": 1, "evaluate": 3}  # not set up again; evals at 2, 4 and the end
    assert isinstance(result.module, nn.Sequential)
    offset = ToyData()[0]["y"].new_tensor([float(torch.cat([ToyData()[i]["y"] for i in range(64)]).mean())])
    assert result.metrics["offset"] == pytest.approx(float(offset) + 1.0, abs=1e-5)
    assert "weight_error" in result.metrics
    records = read_log(tmp_path)
    assert [r["step"] for r in records if "eval" in r] == [2, 4, 6]
    assert records[-1] == {"step": 6, "final": {"offset": result.metrics["offset"]}}
    assert result.config["steps"] == 6


def test_resume_with_changed_options_extends_the_run(tmp_path, reference):
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out, symlinks=True)
    task = make_task(**{**RESUME_CONFIG, "steps": 16, "lr": 0.1, "weight_decay": 0.0})
    with pytest.warns(UserWarning, match="steps 12 -> 16"):
        result = Trainer(task, out, seed=3, resume=True, progress=False).fit()
    assert result.completed and result.steps_done == 16
    records = [r for r in read_log(out) if "lr" in r]
    assert [r["step"] for r in records][-5:] == [12, 13, 14, 15, 16]
    # milestones at round(0.5 * 16) = 8 and round(0.75 * 16) = 12: the 13th update uses 0.1 * 0.01
    assert records[-4]["lr"] == pytest.approx(0.1 * 0.01)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.0]


def test_worker_processes_give_the_same_batches_and_seeds(tmp_path):
    cfg = dict(RESUME_CONFIG, num_workers=2)
    Trainer(make_task(**cfg), tmp_path / "a", seed=3, progress=False, max_steps_this_run=5).fit()
    Trainer(make_task(**cfg), tmp_path / "a", seed=3, resume=True, progress=False).fit()
    Trainer(make_task(**RESUME_CONFIG), tmp_path / "b", seed=3, progress=False).fit()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # workers change nothing

    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            return torch.tensor([torch.rand(()).item(), float(np.random.rand()), random.random()])

    def first_batches():
        sampler = ResumableBatchSampler(8, 2, seed=5)
        loader = train_loader(Draws(), sampler, collate_fn=None, num_workers=2, pin_memory=False)
        batches = iter(loader)
        return torch.cat([next(batches) for _ in range(4)])

    draws = first_batches()
    assert torch.equal(draws, first_batches())  # worker seeds are a function of the run's seed
    assert len(set(draws[:, 1].tolist())) == 8  # numpy is seeded per worker, not copied from the parent
