"""Run by test_cli_ddp.py under `torchrun --nproc_per_node 2`: the `zoo train` command itself
(`zoo.cli`'s app, as `torchrun -m zoo.cli train ...` runs it) for each run named on the command
line, every run into one shared --out folder as the README's torchrun command does. Each rank also
writes its final weights to OUT/<run>/rank<R>.pt, so the test can compare the ranks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import train_args  # noqa: E402

from zoo import training  # noqa: E402
from zoo.cli import app  # noqa: E402

_fit = training.Trainer.fit


def _fit_and_keep_rank_weights(self):
    result = _fit(self)
    state = {k: v.detach().clone() for k, v in result.module.state_dict().items()}
    torch.save(state, Path(self.out_dir) / f"rank{os.environ['RANK']}.pt")
    return result


def main(out_root: str, runs: list[str]) -> None:
    training.Trainer.fit = _fit_and_keep_rank_weights
    for run in runs:
        out = Path(out_root) / run
        sys.argv = ["zoo", *train_args(run, out, steps=2)]
        app(sys.argv[1:], standalone_mode=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
