"""`zoo train` is a function of its command line (issue #19), for every family's training stage.

Per run, three fresh processes with the same --seed: an uninterrupted reference run; a second run,
stopped with Ctrl-C (SIGINT) after its first logged step; and that run continued with --resume.
The second run's steps before the stop must log bitwise the reference's losses (the same command
twice gives the same run), and after resuming its whole log (losses, lr, grad norms, final
metrics) and its saved weights must equal the reference's (stop + resume changes nothing).
One process start costs about 3 s of CPU (importing torch): three a run is the least that tests
both claims.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cli_runs sits beside this file
from cli_runs import RUNS, STEPS, read_log, weights, zoo_train, zoo_train_interrupted  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("run", sorted(RUNS))
def test_same_seed_same_run_and_ctrl_c_resume_changes_nothing(run, tmp_path):
    reference, second = tmp_path / "reference", tmp_path / "second"
    zoo_train(run, reference)
    want = read_log(reference / "log.jsonl", strip_timing=True)
    assert [r["step"] for r in want if "loss" in r] == list(range(1, STEPS + 1))

    stopped_at = zoo_train_interrupted(run, second, after_step=1)
    assert 1 <= stopped_at < STEPS, f"Ctrl-C came too late to test resuming (checkpoint at step {stopped_at})"
    before = read_log(second / "log.jsonl", strip_timing=True)
    assert before and before == want[: len(before)]  # run twice: the same losses, bitwise

    zoo_train(run, second, resume=True)
    assert read_log(second / "log.jsonl", strip_timing=True) == want
    got, expected = weights(second), weights(reference)
    assert got.keys() == expected.keys()
    for key in got:
        assert torch.equal(got[key], expected[key]), key
