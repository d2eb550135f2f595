"""DDP: two CPU processes under torchrun (gloo) train the same weights on disjoint shards,
and a stopped-and-resumed distributed run matches an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

from zoo.training import ResumableBatchSampler

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(tmp_path)]
    # Own session, so that on a time-out the workers die with torchrun instead of lingering.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError("2-process DDP run timed out after 180 s:\n" + stdout[-2000:] + stderr[-2000:]) from None
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["steps"], r["stopped_at"]) for r in ranks] == [(6, 4), (6, 4)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # EMA weights equal across ranks
    assert torch.equal(ranks[0]["live"], ranks[1]["live"])  # gradients were all-reduced

    # Same global order, each rank its own strided slice: 40 items -> 20 a rank -> 5 batches of 4.
    for rank, saved in enumerate(ranks):
        sampler = ResumableBatchSampler(40, 4, seed=1, rank=rank, world_size=2)
        expected = sum(sampler.rank_batches(0) + sampler.rank_batches(1)[:1], [])
        assert saved["seen"] == expected
    assert not set(ranks[0]["seen"][:20]) & set(ranks[1]["seen"][:20])

    records = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # rank 0 alone wrote: no duplicates
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == ["last.pt", "step-000003.pt", "step-000006.pt"]
    state = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 6
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])

    # Stopped after 4 steps and resumed: the same losses (averaged over ranks) and weights.
    resumed = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in resumed] == [r["loss"] for r in records]
    for saved in ranks:
        for key, value in saved["resumed"].items():
            assert torch.equal(value, saved["state"][key]), key
    assert not any(k.startswith("module.") for k in state["model"])  # the plain module, not the DDP wrapper
