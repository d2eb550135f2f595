"""Tiny `zoo train` runs of every family, as separate processes (shared by the CLI reproducibility
and torchrun tests).

Each entry is the arguments after `zoo train`: the micro variant, a few steps, a log line every
step and the smallest data each family's train config allows, so that one run costs about the
process start-up (importing torch) plus a second of work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
_SCENES = ["--set", "train_images=2", "--set", "val_images=1", "--set", "batch_size=2"]
RUNS: dict[str, list[str]] = {
    "efficientad": ["efficientad"],
    "efficientad-teacher": ["efficientad", "--stage", "teacher", "--set", "batch_size=2", "--set", "stats_images=2",
                            "--set", "virtual_length=8"],
    "docdiff": ["docdiff", "--set", "pages=2", "--set", "val_pages=1", "--set", "val_steps=1", "--set", "page_size=64",
                "--set", "crop_size=32", "--set", "batch_size=2"],
    "vidt": ["vidt", *_SCENES, "--set", "scene_size=64"],
    "vidt-plus": ["vidt-plus", *_SCENES, "--set", "scene_size=64"],
    "oneformer": ["oneformer", *_SCENES, "--set", "samples_per_epoch=4", "--set", "num_points=64"],
    "autoencoder-kl": ["autoencoder-kl", "--set", "batch_size=4", "--set", "train_images=64", "--set", "val_images=4",
                       "--set", "stats_images=8"],
    # autoencoder=keep: the codec as built (the bundled autoencoder is not what these tests are about)
    "lct": ["lct", "--set", "batch_size=4", "--set", "train_images=32", "--set", "val_images=8", "--set", "eval_samples=8", "--set", "autoencoder=keep"],
}
TIMEOUT = 240


def env() -> dict[str, str]:
    """One thread (the tests' budget, and the same float reductions in every process)."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_args(run: str, out: Path, seed: int = 3, steps: int = STEPS, resume: bool = False) -> list[str]:
    args = ["train", *RUNS[run][:1], "--variant", "micro", "--data", "synthetic", "--seed", str(seed),
            "--steps", str(steps), "--out", str(out), "--no-progress", *RUNS[run][1:], "--set", "log_every=1"]
    return args + (["--resume"] if resume else [])


def zoo_train(run: str, out: Path, **kwargs) -> subprocess.CompletedProcess:
    """`python -m zoo.cli train ...` in a fresh process; fails the test on a non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *train_args(run, out, **kwargs)], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"zoo train {run} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def zoo_train_interrupted(run: str, out: Path, after_step: int = 1, **kwargs) -> int:
    """Start `zoo train`, press Ctrl-C (SIGINT) once `after_step` is logged; returns the step of the
    checkpoint it saved. (The trainer installs its own SIGINT handler, so this works even where the
    test process inherited an ignored SIGINT from a background shell.)"""
    log = Path(out) / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *train_args(run, out, **kwargs)], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not any(r.get("step", 0) >= after_step and "loss" in r for r in read_log(log)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"zoo train {run} ended or hung before step {after_step}:\n"
                                     + "".join(proc.communicate()))
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    steps = sorted(int(p.stem.split("-")[1]) for p in (Path(out) / "checkpoints").glob("step-*.pt"))
    assert proc.returncode != 0 and steps, f"no stop and checkpoint after Ctrl-C:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    assert not (Path(out) / "model.safetensors").exists()  # stopped: no final weights
    return steps[-1]


def read_log(path: Path, strip_timing: bool = False) -> list[dict]:
    """log.jsonl records (a line still being written is skipped); without wall-clock fields on request."""
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if strip_timing:
            record.pop("time", None)
            record.pop("it_s", None)
        records.append(record)
    return records


def weights(out: Path) -> dict:
    return load_file(str(Path(out) / "model.safetensors"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
