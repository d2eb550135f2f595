"""The shared training loop: one `Trainer` runs any family's `TrainTask`.

Step numbers count finished optimiser updates: log line `step: 5` and `step-000005.pt`
describe the state after the fifth update; a failure "at step 6" happened while computing
the sixth.

Reproducibility: on CPU with the same seed, a run that is interrupted (Ctrl-C, `request_stop`,
`max_steps_this_run`) and resumed logs bitwise the same losses as an uninterrupted one. That
holds because (1) the data order is a pure function of (seed, epoch) and the sampler resumes
at the exact batch, (2) checkpoints hold the model, optimiser, scheduler, EMA, grad scaler
and every global RNG state (one set a rank), (3) evaluation and finalize run with the RNG
state preserved, (4) nothing else (loader creation, workers) draws from the global RNG. `zoo train`
seeds before it builds the model, so two runs of one command are also bitwise equal. Bitwise
holds for one thread count: CPU kernels split reductions by thread, so another
`OMP_NUM_THREADS` moves the last bits (tests/training/test_cli_reproducible.py runs one thread).

`out_dir/log.jsonl` holds one line a logged step, `{"step", <every scalar of training_step>,
"lr", ["grad_norm" when clipping], "it_s", "time"}`, plus `{"step", "eval": {...}}` and
`{"step", "final": {...}}` lines. On resume, lines after the checkpoint's step are dropped.

Under torchrun (WORLD_SIZE > 1): `batch_size` is per process (the global batch is
batch_size x world size), each rank reads its own slice of the same global order, logged
values are averaged over ranks, and only rank 0 writes the log, checkpoints and progress bar.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.trainable import TrainTask
from zoo.training.checkpoint import (
    CHECKPOINT_DIR,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    preserved_rng,
    remove_temp_files,
    restore_rng,
    save_checkpoint,
)
from zoo.training.data import ResumableBatchSampler, derive_seed, move_to_device, setup_loader, train_loader
from zoo.training.distributed import DistContext, wrap_ddp
from zoo.training.ema import EMA
from zoo.training.optim import build_optimizer, build_scheduler, check_config, clip_gradients
from zoo.training.progress import JsonlLog, Progress

CHECKPOINT_FORMAT = 1
Callback = Callable[["Trainer", int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good state is in the checkpoint named."""


class RunExistsError(FileExistsError):
    """A fresh run was asked for in a folder that already holds a run's checkpoints."""


@dataclass
class TrainResult:
    """What a finished (or stopped) `fit` hands back.

    `module` is what to save as the model weights: the EMA copy if EMA is on, after
    `finalize`, passed through `task.to_pipeline`. `metrics` merges the final `evaluate`
    and `finalize` results. `completed` is False when the run stopped before `steps`
    (then `metrics` is empty and finalize did not run).
    """

    module: nn.Module
    metrics: dict[str, float]
    steps_done: int
    out_dir: Path
    config: dict[str, Any]
    completed: bool
    seed: int
    run_info: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    log_path: Path | None = None


@dataclass
class _State:
    """The loop's position: updates done, next batch, wall time spent before this process."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed: float = 0.0


def _plain(value: Any) -> Any:
    """A JSON round trip: plain types that `torch.load(weights_only=True)` accepts."""
    return json.loads(json.dumps(value, default=str))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _scalars(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The dict's scalar entries (tensors or numbers), detached, as 0-d float tensors."""
    found = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            found[key] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[key] = torch.tensor(float(value))
    return found


class Trainer:
    """Runs a `TrainTask`: optimiser, schedule, clipping, EMA, AMP, logging, checkpoints, DDP.

    `callbacks` are called after every update as `callback(trainer, step, values)` with the
    step's logged scalars as floats (this rank's values). `max_steps_this_run` stops (with a
    checkpoint) after that many updates in this call of `fit`.
    """

    def __init__(self, task: TrainTask, out_dir: str | Path, *, seed: int = 0, resume: bool = False,
                 device: str = "cpu", progress: bool = True, run_info: dict | None = None,
                 max_steps_this_run: int | None = None, callbacks: Sequence[Callback] = ()):
        if max_steps_this_run is not None and max_steps_this_run < 1:
            raise ValueError(f"max_steps_this_run must be at least 1, got {max_steps_this_run}")
        if not hasattr(task.module, "training_step"):
            raise TypeError(f"{type(task.module).__name__} has no training_step(batch) method")
        self.task = task
        self.config = task.config
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.resume = resume
        self.requested_device = device
        self.progress = progress
        self.run_info = _plain(run_info or {})
        self.max_steps_this_run = max_steps_this_run
        self.callbacks = list(callbacks)
        self.checkpoint_dir = self.out_dir / CHECKPOINT_DIR
        self.log = JsonlLog(self.out_dir / "log.jsonl")
        self._stop_requested = False
        self._interrupted = False
        self._state = _State()
        self._last_saved: Path | None = None
        self._last_saved_step = -1

    # ----------------------------------------------------------------- public

    @property
    def step(self) -> int:
        """Updates done so far."""
        return self._state.step

    @property
    def module(self) -> nn.Module:
        """The live module being trained (not the EMA copy)."""
        return self.task.module

    def request_stop(self) -> None:
        """Checkpoint and stop after the current update (from a callback, a thread, a test)."""
        self._stop_requested = True

    def fit(self) -> TrainResult:
        """Train to `config.steps` (or until stopped); see `TrainResult`."""
        check_config(self.config)
        self.device = torch.device(self.requested_device)
        self.dist = DistContext.from_env(self.device)
        self.device = self.dist.device(self.requested_device)
        self.log.enabled = self.dist.is_main
        return self._fit()

    # ----------------------------------------------------------------- setup

    def _fit(self) -> TrainResult:
        cfg, task, ctx = self.config, self.task, self.dist
        module = task.module.to(self.device)
        self.optimizer = build_optimizer(module, cfg, task.parameters)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")
        self._trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.ema: EMA | None = None

        latest = latest_checkpoint(self.checkpoint_dir)
        if self.resume and latest is None:
            raise FileNotFoundError(f"resume requested but {self.checkpoint_dir} holds no checkpoint "
                                    f"(step-*.pt); start without resume to train from scratch")
        if not self.resume and latest is not None:
            raise RunExistsError(f"{self.out_dir} already holds a run ({latest.name}); resume it "
                                 f"or choose another output folder")
        ctx.barrier()  # every rank has looked before rank 0 writes anything
        if ctx.is_main:
            remove_temp_files(self.checkpoint_dir)

        if self.resume:
            self._load(latest)
        else:
            self._start_fresh(module)

        if self._state.step >= cfg.steps:
            # Resuming a finished run: nothing to train; rebuild the final module (finalize
            # again, as its effect is not in the checkpoint) without adding to the log.
            return self._finish(write_log=False)
        self._train(module)
        if self._state.step < cfg.steps:
            return self._result(completed=False, metrics={})
        return self._finish(write_log=True)

    def _start_fresh(self, module: nn.Module) -> None:
        cfg, task = self.config, self.task
        _seed_everything(self.seed + self.dist.rank)  # ranks draw different noise/dropout
        self.log.start_fresh()
        if task.setup is not None:
            loader = setup_loader(task.dataset, cfg.batch_size, collate_fn=task.collate_fn,
                                  num_workers=cfg.num_workers, seed=self.seed)
            task.setup(module, loader)
        if cfg.ema_decay > 0:
            self.ema = EMA(module, cfg.ema_decay, self._trained)
        self._state = _State()

    def _load(self, path: Path) -> None:
        cfg, module = self.config, self.task.module
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a checkpoint of this trainer (format {state.get('format')!r})")
        module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if cfg.ema_decay > 0:
            self.ema = EMA(module, cfg.ema_decay, self._trained)
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                warnings.warn(f"{path.name} has no EMA weights; the EMA starts from the current weights", stacklevel=2)
        data = state["data"]
        self._state = _State(step=int(state["step"]), epoch=int(data["epoch"]), batch=int(data["batch"]),
                             elapsed=float(state["elapsed"]))
        if int(state.get("world_size", 1)) != self.dist.world_size:
            warnings.warn(f"{path.name} was written by {state.get('world_size')} process(es), this run has "
                          f"{self.dist.world_size}: the data order will differ from an uninterrupted run", stacklevel=2)
        self._apply_config_changes(state.get("config", {}))
        self._restore_rank_rng(state["rng"], path)
        if self._state.step < cfg.steps:
            self.log.keep_until(self._state.step)
        self._last_saved, self._last_saved_step = path, self._state.step

    def _apply_config_changes(self, saved: dict[str, Any]) -> None:
        """Warn about options changed since the checkpoint; the new ones apply from here on."""
        current = _plain(self.config.to_dict())
        changed = sorted(k for k in current if k in saved and saved[k] != current[k])
        if not changed:
            return
        described = ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed)
        warnings.warn(f"resuming with changed options: {described}", stacklevel=2)
        # The loaded optimiser holds the old hyperparameters. Groups that used the old config
        # value get the new one (a group with its own value, e.g. no weight decay, keeps it).
        for key in ("weight_decay", "betas", "momentum"):
            if key in changed:
                for group in self.optimizer.param_groups:
                    if key in group and _plain(group[key]) == saved[key]:
                        group[key] = tuple(current[key]) if key == "betas" else current[key]
        # Rescale each group's base rate by new lr / old lr (groups may have their own
        # multipliers) and re-evaluate the schedule at the current step.
        if saved.get("lr"):
            for group in self.optimizer.param_groups:
                group["initial_lr"] = group["initial_lr"] * self.config.lr / saved["lr"]
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ----------------------------------------------------------------- loop

    def _train(self, module: nn.Module) -> None:
        cfg, task, ctx, st = self.config, self.task, self.dist, self._state
        sampler = ResumableBatchSampler(len(task.dataset), cfg.batch_size, self.seed, rank=ctx.rank,
                                        world_size=ctx.world_size, start_epoch=st.epoch, start_batch=st.batch)
        loader = train_loader(task.dataset, sampler, collate_fn=task.collate_fn, num_workers=cfg.num_workers,
                              pin_memory=self.device.type == "cuda")
        if cfg.grad_checkpointing:
            enable_checkpointing(module)
        if ctx.enabled:
            find_unused = bool(task.extra.get("ddp_find_unused_parameters", False))
            step_fn = wrap_ddp(module, ctx, self.device, find_unused)
        else:
            step_fn = module.training_step
        self._bar = Progress(cfg.steps, st.step, self.progress and ctx.is_main)
        stop_at = st.step + self.max_steps_this_run if self.max_steps_this_run is not None else None
        self._clock = (time.perf_counter(), st.elapsed)  # (start of this process's loop, time spent before)
        self._last_log = (self._clock[0], st.step)
        self._updating = False
        module.train()
        batches = iter(loader)
        try:
            with self._sigint_as_stop():
                while st.step < cfg.steps:
                    loss, values = self._forward(step_fn, next(batches))
                    lr, grad_norm = self._update(module, loss, sampler)
                    self._after_update(module, values, lr, grad_norm)
                    stop = self._stop_requested or self._interrupted or (stop_at is not None and st.step >= stop_at)
                    (stop,) = ctx.any(stop, device=self.device)
                    if stop or st.step == cfg.steps or (cfg.ckpt_every > 0 and st.step % cfg.ckpt_every == 0):
                        self._save(barrier=True)
                    if stop:
                        break
        except KeyboardInterrupt:
            self._save_after_interrupt()
            raise
        except Exception as err:
            if not self._interrupted:
                raise
            # Ctrl-C also reaches DataLoader workers, which then exit: report it as the interrupt.
            self._save_after_interrupt()
            raise KeyboardInterrupt from err
        finally:
            self._bar.close()
            del batches  # shuts down the loader's workers
        if self._interrupted:
            raise KeyboardInterrupt

    def _forward(self, step_fn: Callable, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """training_step under autocast; the loss and the step's scalars as floats. A non-finite
        loss on any rank stops the run here, before it touches the weights."""
        cfg = self.config
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        with torch.autocast(self.device.type, dtype=dtype, enabled=cfg.amp):
            out = step_fn(move_to_device(batch, self.device))
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError("training_step must return a dict with a scalar 'loss'")
        loss = out["loss"]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("training_step's 'loss' must be a scalar tensor")
        scalars = _scalars(out)
        values = dict(zip(scalars, torch.stack(list(scalars.values())).tolist()))  # one device sync
        (bad,) = self.dist.any(not math.isfinite(values["loss"]), device=self.device)
        if bad:
            self._fail_non_finite(values["loss"], self._state.step + 1)
        return loss, values

    def _update(self, module: nn.Module, loss: torch.Tensor,
                sampler: ResumableBatchSampler) -> tuple[float, torch.Tensor | None]:
        """Backward, clip, optimiser and scheduler step, EMA, counters; returns (lr used, grad norm)."""
        cfg, st = self.config, self._state
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = None
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            grad_norm = clip_gradients(self.optimizer, cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self._updating = True  # from here until the counters move, the state is half-updated
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(module)
        st.step += 1
        st.epoch, st.batch = sampler.advance(st.epoch, st.batch)
        st.elapsed = self._clock[1] + time.perf_counter() - self._clock[0]
        self._updating = False
        return lr, grad_norm

    def _after_update(self, module: nn.Module, values: dict[str, float], lr: float,
                      grad_norm: torch.Tensor | None) -> None:
        """Progress bar, log line, callbacks and the periodic evaluation."""
        cfg, step = self.config, self._state.step
        self._bar.update({**values, "lr": lr})
        if self._log_due(step):
            self._log_step(values, lr, grad_norm)
        for callback in self.callbacks:
            callback(self, step, values)
        if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < cfg.steps:
            self._evaluate(module)

    @contextlib.contextmanager
    def _sigint_as_stop(self) -> Iterator[None]:
        """First Ctrl-C: finish the update, checkpoint, raise KeyboardInterrupt. Second: raise at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            self._bar.write("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _log_due(self, step: int) -> bool:
        every = self.config.log_every
        return step == 1 or step == self.config.steps or (every > 0 and step % every == 0)

    def _log_step(self, values: dict[str, float], lr: float, grad_norm: torch.Tensor | None) -> None:
        """One log.jsonl line: every scalar of the step (averaged over ranks), lr, it/s, time."""
        now, step = time.perf_counter(), self._state.step
        keys = list(values)
        averaged = self.dist.mean([values[k] for k in keys], self.device)
        record: dict[str, Any] = {"step": step, **dict(zip(keys, averaged)), "lr": lr}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        last_time, last_step = self._last_log
        record["it_s"] = round((step - last_step) / max(now - last_time, 1e-9), 3)
        record["time"] = round(self._state.elapsed, 3)
        self.log.write(record)
        self._last_log = (now, step)

    def _fail_non_finite(self, loss: float, step: int) -> None:
        path = self._save(barrier=True)
        raise NonFiniteLossError(f"training loss is {loss} at step {step}; stopped before applying it. "
                                 f"The last good state (after step {step - 1}) is in {path}; lower lr, "
                                 f"enable grad_clip or check the data, then resume")

    def _save_after_interrupt(self) -> None:
        if self._updating:
            self._bar.write(f"interrupted during a parameter update: not saving; the last checkpoint is "
                            f"{self._last_saved}")
            return
        path = self._save(barrier=False)  # other ranks may be anywhere: no collective here
        self._bar.write(f"interrupted: saved {path} (resume to continue)")

    # ----------------------------------------------------------------- checkpoints

    def _restore_rank_rng(self, states: list[dict[str, Any]], path: Path) -> None:
        """Restore this rank's RNG streams; a rank the checkpoint lacks (an emergency save, or a
        larger world) gets a fresh stream seeded from (seed, rank, step)."""
        rank = self.dist.rank
        if rank < len(states):
            restore_rng(states[rank])
            return
        warnings.warn(f"{path.name} holds no RNG state for rank {rank}: reseeding it", stacklevel=2)
        _seed_everything(derive_seed(self.seed, rank, self._state.step))

    def _checkpoint_state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        st = self._state
        return {
            "format": CHECKPOINT_FORMAT,
            "step": st.step,
            "data": {"epoch": st.epoch, "batch": st.batch},
            "elapsed": st.elapsed,
            "model": self.task.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,  # one entry a rank
            "seed": self.seed,
            "world_size": self.dist.world_size,
            "config": _plain(self.config.to_dict()),
            "run_info": self.run_info,
        }

    def _save(self, barrier: bool) -> Path | None:
        """Checkpoint the current state (rank 0 writes; with `barrier`, all ranks wait for it)."""
        if self._state.step == self._last_saved_step:
            return self._last_saved
        if barrier:
            rng = self.dist.gather(capture_rng())  # a collective, so also the barrier before writing
        else:
            rng = [capture_rng()] if self.dist.is_main else []
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self._checkpoint_state(rng), self.checkpoint_dir, self._state.step)
        if barrier:
            self.dist.barrier()
        self._last_saved, self._last_saved_step = path, self._state.step
        return path

    # ----------------------------------------------------------------- end of run

    def _final_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.task.module

    def _evaluate(self, module: nn.Module) -> dict[str, float]:
        """task.evaluate on the (EMA) module in eval mode, without moving the RNG streams."""
        if self.task.evaluate is None:
            return {}
        target = self._final_module()
        target.eval()
        try:
            with preserved_rng(), torch.no_grad():
                metrics = dict(self.task.evaluate(target) or {})
        finally:
            module.train()
        self.log.write({"step": self._state.step, "eval": metrics})
        return metrics

    def _finish(self, write_log: bool) -> TrainResult:
        """Final evaluate and finalize on the (EMA) module; the trained state is already checkpointed."""
        if not write_log:
            self.log.enabled = False
        target = self._final_module()
        target.eval()
        metrics: dict[str, float] = {}
        with preserved_rng(), torch.no_grad():
            if self.task.evaluate is not None:
                metrics.update(self.task.evaluate(target) or {})
                self.log.write({"step": self._state.step, "eval": dict(metrics)})
            if self.task.finalize is not None:
                final = dict(self.task.finalize(target) or {})
                metrics.update(final)
                self.log.write({"step": self._state.step, "final": final})
        return self._result(completed=True, metrics=metrics)

    def _result(self, completed: bool, metrics: dict[str, float]) -> TrainResult:
        target = self._final_module()
        target.eval()
        module = self.task.to_pipeline(target) if self.task.to_pipeline is not None else target
        return TrainResult(module=module, metrics=metrics, steps_done=self._state.step, out_dir=self.out_dir,
                           config=self.config.to_dict(), completed=completed, seed=self.seed,
                           run_info=self.run_info, checkpoint=self._last_saved,
                           log_path=self.log.path if self.dist.is_main else None)


def enable_checkpointing(module: nn.Module) -> int:
    """Turn on gradient checkpointing in every submodule that has the switch (our networks'
    `gradient_checkpointing` attribute, as diffusers' models name it); returns how many."""
    count = 0
    for sub in module.modules():
        if hasattr(sub, "gradient_checkpointing") and not callable(sub.gradient_checkpointing):
            sub.gradient_checkpointing = True
            count += 1
    if not count:
        raise ValueError("grad_checkpointing is on but no module of this task supports it")
    return count
