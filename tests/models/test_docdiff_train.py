"""DocDiff joint training: paper defaults, the step's losses and gradients, a short falling run."""

from __future__ import annotations

import math

import pytest
import torch
from training_loops import fit_one_batch

from zoo.models.docdiff.loss import coarse_loss, total_loss
from zoo.models.docdiff.model import DocDiff, preset_config
from zoo.models.docdiff.train import DocDiffTrainable, DocDiffTrainConfig, build_task


def _micro(seed: int = 0) -> DocDiff:
    torch.manual_seed(seed)
    return DocDiff(preset_config("micro"))


def test_paper_defaults():
    c = DocDiffTrainConfig()
    assert (c.optimizer, c.lr, c.weight_decay, c.batch_size, c.ema_decay) == ("adamw", 1e-4, 1e-4, 32, 0.9999)
    assert (c.beta_loss, c.high_weight, c.crop_size, c.degrees, c.hflip) == (50.0, 2.0, 128, 10.0, 0.2)


def test_training_step_terms_and_gradients():
    model = _micro()
    module = DocDiffTrainable(model, DocDiffTrainConfig())
    batch = {"degraded": torch.rand(2, 3, 32, 32), "clean": torch.rand(2, 3, 32, 32)}
    module.eval()  # dropout off, so L_CP can be recomputed
    torch.manual_seed(1)
    out = module.training_step(batch)
    assert out["loss"].item() == pytest.approx(total_loss(out["l_diff"], out["l_cp"]).item(), rel=1e-6)
    with torch.no_grad():
        assert out["l_cp"].item() == pytest.approx(coarse_loss(model.coarse(batch["degraded"]), batch["clean"]).item(), rel=1e-5)
    out["loss"].backward()
    assert model.init_predictor.final.weight.grad.abs().sum() > 0
    assert model.denoiser.final.weight.grad.abs().sum() > 0
    # L_diff alone still reaches the CP through the residual target (the reference's graph),
    # but not through the HRR's conditioning input, which is detached
    model.zero_grad()
    torch.manual_seed(1)
    t = torch.randint(0, 100, (2,))
    coarse = model.coarse(batch["degraded"])
    residual = batch["clean"] - coarse
    pred = model.predict_residual(model.q_sample(residual, t, torch.randn_like(residual)), coarse.detach(), t)
    ((pred - residual) ** 2).mean().backward()
    assert model.init_predictor.final.weight.grad.abs().sum() > 0


def test_short_run_loss_falls(tmp_path):
    model = _micro()
    config = DocDiffTrainConfig(batch_size=4, pages=4, page_size=128, val_pages=2, val_steps=2, crop_size=64)
    task = build_task(model, "synthetic", config, seed=0, workdir=tmp_path)
    assert (tmp_path / "data" / "mixed-train" / "degraded" / "00000.png").is_file()
    item = task.dataset[0]
    assert item["degraded"].shape == item["clean"].shape == (3, 64, 64)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(task.module.parameters(), lr=2e-3, weight_decay=1e-4)
    batch = {k: torch.stack([task.dataset[i][k] for i in range(4)]) for k in ("degraded", "clean")}
    losses = fit_one_batch(task.module, batch, optimizer, 30)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    metrics = task.finalize(task.module)
    for name in ("input", "cp", "docdiff"):
        assert math.isfinite(metrics[f"{name}_psnr"]) and 0 < metrics[f"{name}_ssim"] <= 1
    assert task.to_pipeline(task.module) is model


def test_user_paired_folder(tmp_path):
    from zoo.data.documents import generate_document_pairs

    folder = generate_document_pairs(tmp_path / "mine", task="seal", count=2, seed=4, size=(96, 160))
    task = build_task(_micro(), str(folder), DocDiffTrainConfig(crop_size=128, crops_per_epoch=10), seed=0, workdir=tmp_path / "run")
    assert task.extra["data"] == str(folder) and task.extra["validation"] is None and len(task.dataset) == 10
    item = task.dataset[3]
    assert item["degraded"].shape == (3, 128, 128)
    assert task.finalize(task.module) == {}


@pytest.mark.parametrize("task", ["deblur", "denoise", "watermark", "seal"])
def test_micro_task_variants(task):
    """micro-TASK: the micro sizes with one task recorded, so `zoo train` generates that task's pages."""
    from dataclasses import replace

    from zoo.registry import get_card

    config = preset_config(f"micro-{task}")
    assert config.task == task
    assert config == replace(preset_config("micro"), task=task)
    card = get_card("docdiff")
    spec = card.variants[f"micro-{task}"]
    assert spec.demo_weights == f"micro-{task}.safetensors"
    defaults = card.train_stages["joint"].variant_defaults[f"micro-{task}"]
    assert defaults["batch_size"] == 8 and defaults["schedule"] == "cosine"


def test_unknown_micro_task_refused():
    for name in ("micro-mixed", "micro-blur", "micro-"):
        with pytest.raises(KeyError):
            preset_config(name)


def test_micro_task_trains_on_its_task(tmp_path):
    import json

    torch.manual_seed(0)
    model = DocDiff(preset_config("micro-seal"))
    config = DocDiffTrainConfig(batch_size=2, pages=2, page_size=128, val_pages=1, crop_size=64, crops_per_epoch=4)
    task = build_task(model, "synthetic", config, seed=0, workdir=tmp_path)
    assert task.extra["task"] == "seal"
    assert json.loads((tmp_path / "data" / "seal-train" / "meta.json").read_text())["task"] == "seal"
    assert not (tmp_path / "data" / "mixed-train").exists()


def test_bench_pages_task_filter():
    from zoo.bench.docdiff_quality import _pages

    degraded, clean, tasks = _pages(123, 3, 64, task="seal")
    assert tasks == ["seal"] * 3 and len(degraded) == len(clean) == 3
    # unfiltered: the four tasks in turn, and page 0 of each filter is the same page as in the mix
    _, mixed_clean, mixed_tasks = _pages(123, 4, 64)
    assert mixed_tasks == ["deblur", "denoise", "watermark", "seal"]
    d0, c0, _ = _pages(123, 1, 64, task="deblur")
    torch.testing.assert_close(c0[0], mixed_clean[0], rtol=0, atol=0)
    with pytest.raises(ValueError):
        _pages(123, 1, 64, task="blur")


def test_bench_seed_spread_pairs_the_hrr_with_cp_run_by_run():
    from zoo.bench.docdiff_quality import METRICS, OUTPUTS, seed_spread

    def result(cp_psnr: float, hrr_psnr: float) -> dict:
        metrics = {name: dict.fromkeys(METRICS, 0.5) for name in OUTPUTS}
        metrics["cp"]["psnr"], metrics["cp_hrr"]["psnr"] = cp_psnr, hrr_psnr
        return {"results": {n: metrics[n] for n in OUTPUTS[:3]}, "plug_and_play": {n: metrics[n] for n in OUTPUTS[3:]}}

    # the HRR adds 1, 2 and 3 dB on runs whose CP PSNRs differ by far more: the pairing resolves it
    spread = seed_spread([result(10.0, 11.0), result(20.0, 22.0), result(30.0, 33.0)])
    assert spread["runs"] == 3
    assert spread["summary"]["cp"]["psnr"]["mean"] == pytest.approx(20.0) and spread["summary"]["cp"]["psnr"]["std"] == pytest.approx(10.0)
    gain = spread["paired"]["cp_hrr minus cp"]["psnr"]
    assert gain["mean"] == pytest.approx(2.0) and gain["std"] == pytest.approx(1.0) and gain["values"] == pytest.approx([1.0, 2.0, 3.0])
    assert spread["paired"]["plain_unet_hrr minus plain_unet"]["ssim"]["mean"] == 0.0
    # --plain-steps 0 benched no plain U-Net: its rows and pair are left out, not filled in
    no_plain = [{**r, "plug_and_play": None} for r in (result(10.0, 11.0), result(20.0, 22.0))]
    spread = seed_spread(no_plain)
    assert set(spread["summary"]) == {"input", "cp", "cp_hrr"} and list(spread["paired"]) == ["cp_hrr minus cp"]


def test_bench_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    from zoo.bench.docdiff_quality import main

    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--out", str(tmp_path)])
    assert "no model.json" in capsys.readouterr().err


def test_procedural_pages_are_a_function_of_the_arguments(tmp_path):
    # A smaller or differently sized set in the same workdir must not keep pages of the earlier one.
    from zoo.data.paired import PairedFolder
    from zoo.models.docdiff.train import _procedural

    folder = _procedural(tmp_path, "deblur", 3, 0, "train", 48)
    assert len(PairedFolder(folder)) == 3
    assert _procedural(tmp_path, "deblur", 3, 0, "train", 48) == folder  # reused as is
    folder = _procedural(tmp_path, "deblur", 2, 0, "train", 48)
    assert len(PairedFolder(folder)) == 2
    folder = _procedural(tmp_path, "deblur", 2, 0, "train", 32)
    assert PairedFolder(folder)[0]["clean"].shape[-2:] == (32, 32)
