"""`zoo train` under torchrun (2 CPU processes, gloo), as the README runs it, for every family's
training stage: the synthetic data is written once into the shared --out folder (rank 0 first, the
other rank after a barrier; issue #19: EfficientAD's two ranks both generated it and one failed
with FileExistsError), the run finishes, and both ranks end with the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cli_runs sits beside this file
from cli_runs import RUNS, env, free_port, read_log  # noqa: E402

WORKER = Path(__file__).with_name("cli_ddp_worker.py")

pytestmark = pytest.mark.slow


def test_every_family_trains_under_torchrun_with_equal_rank_weights(tmp_path):
    # One torchrun for all runs: its two workers start torch once and train the runs in turn.
    runs = sorted(RUNS)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(tmp_path), *runs]
    proc = subprocess.Popen(command, env=env(), cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError("zoo train under torchrun timed out:\n" + stdout[-2000:] + stderr[-4000:]) from None
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]

    for run in runs:
        out = tmp_path / run
        assert (out / "model.safetensors").is_file(), run  # rank 0 saved the weights
        steps = [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r]
        assert steps == [1, 2], (run, steps)  # one log, written by rank 0 alone
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys()
        for key, value in ranks[0].items():
            assert torch.equal(value, ranks[1][key]), (run, key)
