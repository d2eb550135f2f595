"""The GPU script, exercised on CPU (`bench/gpu.sh OUT --device cpu --quick`) until it runs on a GPU."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from zoo.bench import gpu

REPO = Path(__file__).resolve().parents[2]


def test_gpu_sh_cpu_quick_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script must set it itself
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), str(tmp_path), "--device", "cpu", "--quick"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "efficientad-micro fp32 eager" in done.stdout  # printed as it goes
    files = list(tmp_path.glob("gpu-cpu-*.json"))
    assert len(files) == 1
    document = json.loads(files[0].read_text())
    assert document["suite"] == "gpu" and document["quick"] and document["command"].startswith("bench/gpu.sh")
    modes = {(r["precision"], r["mode"], r["batch"], r["metric"]) for r in document["results"]}
    assert ("fp32", "eager", 1, "latency") in modes and ("fp16", "eager", 2, "throughput") in modes
    assert all(r["median_ms"] > 0 for r in document["results"] if r["metric"] == "latency")
    assert any("CUDA graphs" in s["what"] and "CUDA" in s["reason"] for s in document["skipped"])
    assert document["peak"]["fp32"]["tflops"] > 0
    assert document["flops_per_image"]["efficientad-micro"] > 0
    assert document["summary"]["efficientad-micro"]["best_latency_ms"] > 0
    from zoo.registry import build_pipeline, list_models

    expected = {(c.name, g.name) for c in list_models() if c.name != "efficientad" for g in build_pipeline(c.name, "micro").graph_specs()}
    measured = {(o["model"], o["graph"]) for o in document["others"] if o["mode"] == "eager" and o.get("median_ms", 0) > 0}
    assert measured == expected  # every other registered model's micro graphs, at batch 1
    # fp16 eager, CUDA graphs, ONNX Runtime CUDA and torch.compile of each main graph: on a GPU only, said so
    reasons = {s["what"]: s["reason"] for s in document["skipped"]}
    assert "CUDA device only" in reasons["other models: fp16 eager, CUDA graphs, ONNX Runtime CUDA"]
    assert "compile disabled" in reasons["other models: torch.compile"]
    check = next(c for c in document["checks"] if "fp16" in c["what"])
    assert check["max_abs_diff"] < 0.05  # fp16 maps track fp32 ones


def test_clock_counts_cpu_calls():
    calls = []
    clock = gpu.Clock(torch.device("cpu"))
    samples = clock.latency_ms(lambda: calls.append(1), iters=4, warmup=2)
    assert len(samples) == 4 and len(calls) == 6
    result = clock.throughput(lambda: calls.append(1), batch=8, target_s=0.01, warmup=1)
    assert result["iters"] >= 3 and result["images_per_s"] > 0


def test_model_file_loads_without_the_family_package():
    module = gpu._load_efficientad_model_module()
    model = module.EfficientAD(module.EfficientADConfig(size="s"))
    assert gpu.efficientad_flops(model) == 75_894_579_200


def test_models_only_run_names_its_suite_and_skips_unknown_variants(tmp_path):
    document = gpu.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--variants", "none", "--no-compile",
                         "--suite", "gpu-models", "--models", "vidt:micro,vidt:no-such-size"])
    assert document["suite"] == "gpu-models" and document["results"] == []  # no EfficientAD section
    assert [(o["model"], o["variant"], o["graph"]) for o in document["others"]] == [("vidt", "micro", "detect")]
    assert any(s["what"] == "vidt/no-such-size" for s in document["skipped"])
    assert (tmp_path / f"gpu-models-cpu-{document['date']}.json").is_file()


def test_gpu_train_recipes_name_real_models_and_settings():
    """bench/gpu-train.sh cannot run here (no GPU); its recipes must at least name registered
    models, variants and training settings that exist, so the lent minutes are not lost to a typo."""
    from zoo.registry import get_card

    script = REPO / "bench" / "gpu-train.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    recipes = re.findall(r"^\s+([a-z-]+)\) echo \"(.+)\" ;;", script.read_text(), flags=re.M)
    assert {name for name, _ in recipes} == {"vidt", "vidt-plus", "oneformer", "efficientad", "docdiff", "anytext"}
    for name, args in recipes:
        words = args.split()
        card = get_card(words[0])
        assert words[0] == name and words[words.index("--variant") + 1] in card.variants
        fields = {f.name for f in dataclasses.fields(next(iter(card.train_stages.values())).config_cls)}
        settings = [words[i + 1].split("=")[0] for i, word in enumerate(words) if word == "--set"]
        assert set(settings) <= fields, f"{name}: unknown settings {set(settings) - fields}"
