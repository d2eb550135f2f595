"""PVD training: a short fit of one procedural batch lowers the loss (ASL and centre terms included);
`zoo train`'s task builds on procedural RefCOCO-style data and finalize reports the grounding metrics."""

import torch
from training_loops import fit_one_batch

from zoo import registry
from zoo.models.pvd.train import PVDTrainable, PVDTrainConfig, build_task, collate


def test_loss_falls_on_one_batch(tmp_path):
    torch.manual_seed(0)
    model = registry.build_pipeline("pvd", "micro").model
    config = PVDTrainConfig(train_images=6, val_images=2)
    task = build_task(model, "synthetic", config, 0, tmp_path)
    batch = collate([task.dataset[i] for i in range(8)])
    module = PVDTrainable(model, config)
    losses = fit_one_batch(module, batch, torch.optim.AdamW(module.parameters(), lr=2e-3), 25, reseed=0)
    assert losses[-1] < 0.6 * losses[0], losses
    out = module.training_step(batch)
    assert {"diffusion_box", "diffusion_polygon", "asl", "centre_ce", "centre_l1"} <= set(out)
    metrics = task.finalize(task.module)
    assert {"acc@0.5", "mIoU", "oIoU", "box_iou"} <= set(metrics) and 0 <= metrics["mIoU"] <= 1


def test_asl_switch_and_absolute_anchor():
    torch.manual_seed(0)
    config = registry.variant_config("pvd", "micro", {"anchor": "absolute"})
    model = registry.build_pipeline("pvd", "micro", config=config).model
    s = config.image_size
    batch = {"image": torch.rand(2, 3, s, s), "sentence": ["the red circle", "the big square"],
             "box": torch.tensor([[10.0, 10.0, 30.0, 40.0], [50.0, 20.0, 80.0, 60.0]]),
             "polygon": torch.rand(2, config.polygon_vertices, 2) * 40 + 10}
    on = PVDTrainable(model, PVDTrainConfig(asl_weight=1.0))
    off = PVDTrainable(model, PVDTrainConfig(asl_weight=0.0))
    torch.manual_seed(1)
    a = on.training_step(batch)
    torch.manual_seed(1)
    b = off.training_step(batch)
    torch.testing.assert_close(a["loss"] - b["loss"], a["asl"])
