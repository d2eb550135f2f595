"""AnyText data (procedural word images, AnyWord-3M JSON), the training step, the OCR metrics."""

import numpy as np
import pytest
import torch
from training_loops import fit_one_batch

from zoo import registry
from zoo.data.words import read_anyword, word_image, write_anyword
from zoo.models.anytext.metrics import normalized_edit_similarity, ocr_accuracy
from zoo.models.anytext.train import AnyTextTrainable, AnyTextTrainConfig, WordConditionSet, collate


def test_anyword_json_round_trip(tmp_path):
    path = write_anyword(tmp_path, count=3, seed=2, size=64, max_lines=2)
    records = read_anyword(path)
    assert len(records) == 3 and records[0]["image_path"].is_file()
    again = word_image(2, "train", 1, 64, 2)
    assert [line.text for line in records[1]["lines"]] == [line.text for line in again.lines]
    np.testing.assert_allclose(records[1]["lines"][0].polygon, again.lines[0].polygon, atol=0.01)
    assert records[1]["caption"] == again.caption
    config = AnyTextTrainConfig(max_lines_data=2)
    from_json = WordConditionSet(64, 2, 2, 8, config, seed=0, anyword=path)
    procedural = WordConditionSet(64, 2, 2, 8, config, seed=2, split="train", count=3)
    assert len(from_json) == 3
    a, b = from_json[1], procedural[1]
    assert a["texts"] == b["texts"]
    assert (a["positions"] - b["positions"]).abs().mean() < 0.01
    (tmp_path / "bad.json").write_text('{"data_list": [{"img_name": "x.png", "annotations": [{"polygon": [[0, 0]]}]}]}')
    with pytest.raises(ValueError, match="polygon"):
        read_anyword(tmp_path / "bad.json")


def test_procedural_lines_are_legible_to_rapidocr():
    items = [word_image(5, "val", i, 64, 1) for i in range(6)]
    metrics = ocr_accuracy([i.image for i in items], [[line.text for line in i.lines] for i in items],
                           [[line.polygon for line in i.lines] for i in items])
    assert metrics["sen_acc"] >= 5 / 6 and metrics["lines"] == 6


def test_normalized_edit_similarity_by_hand():
    assert normalized_edit_similarity("OPEN", "OPEN") == 1.0
    assert normalized_edit_similarity("OPEM", "OPEN") == 0.75
    assert normalized_edit_similarity("", "AB") == 0.0
    assert normalized_edit_similarity("ABC", "ABCDEF") == 0.5


def test_items_and_baseline_captions():
    config = AnyTextTrainConfig(mask_img_prob=1.0, drop_caption_prob=0.0)
    item = WordConditionSet(64, 2, 2, 8, config, seed=0, count=4)[0]
    assert item["glyphs"].shape == (1, 128, 128) and item["positions"].shape == (1, 64, 64) and item["n_lines"] == 1
    assert item["has_mask"] and item["masked_image"].sum() < item["image"].sum()
    assert 265 in item["input_ids"].tolist()  # the "*" placeholder
    plain = WordConditionSet(64, 2, 2, 8, AnyTextTrainConfig(control=False, drop_caption_prob=0.0), seed=0, count=4)[0]
    assert plain["glyphs"].abs().sum() == 0 and plain["positions"].abs().sum() == 0 and not plain["has_mask"]
    assert 265 not in plain["input_ids"].tolist() and plain["embed"] == 0


def test_training_loss_falls():
    torch.manual_seed(0)
    model = registry.build_pipeline("anytext", "micro").model
    config = AnyTextTrainConfig(perceptual_samples=1, drop_caption_prob=0.0)
    module = AnyTextTrainable(model, config)
    dataset = WordConditionSet(64, 2, 2, 8, config, seed=0, count=2)
    batch = collate([dataset[i] for i in range(2)])
    out = module.training_step(batch)
    assert set(out) == {"loss", "diffusion", "perceptual"} and out["perceptual"] > 0
    params = [p for p in module.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.codec.parameters())
    losses = fit_one_batch(module, batch, torch.optim.Adam(params, lr=1e-3), steps=6, reseed=0)
    assert losses[-1] < 0.7 * losses[0]
    # the embedding module learns from the first step (its projection starts at zero)
    assert model.embedding.proj[0].weight.abs().sum() > 0


def test_training_standardises_the_registry_vae_to_unit_variance_on_its_images():
    """The DDPM schedule assumes unit-variance latents (SD's 0.18215); the registry codec ships with sLCT's 0.5."""
    from zoo.models.anytext.train import build_task

    model = registry.build_pipeline("anytext", "micro").model
    config = AnyTextTrainConfig(train_images=64, latent_std_images=64)
    task = build_task(model, "synthetic", config, seed=0, workdir=None)
    images = torch.stack([task.dataset[i]["image"] for i in range(64)])
    with torch.no_grad():
        latents = model.codec.encode(images)
    assert latents.std(dim=(0, 2, 3)).sub(1).abs().max() < 0.02 and latents.mean(dim=(0, 2, 3)).abs().max() < 0.02
    kept = registry.build_pipeline("anytext", "micro").model
    build_task(kept, "synthetic", AnyTextTrainConfig(train_images=64, latent_std=0), seed=0, workdir=None)
    with torch.no_grad():
        assert kept.codec.encode(images).std() < 0.6  # the registry's own statistics (std 0.5 on its images)
