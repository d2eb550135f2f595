"""sLCT: improved latent consistency training.

Dao, Doan, Liu, Le, Metaxas. "Improved Training Technique for Latent Consistency Models",
ICLR 2025. arXiv:2502.01441. Authors' code: https://github.com/quandao10/LCT (research code;
the paper points to quandao10/sLCT, which holds only a README). Our code is our own; facts
(architecture, constants, loss forms) are taken from the authors' code and named where used.

- `model.py`: EDM's ADM U-Net and a DiT with Non-scaling LayerNorm, `LCTConfig` and presets.
- `loss.py`: the consistency-training objective in latent space with each of the paper's changes
  behind a switch (Cauchy loss, early-timestep diffusion loss, OT coupling, adaptive c).
- `train.py`: `LCTTrainConfig` (paper defaults) and `LCTTrainable` for the shared loop.

The schedules, the consistency parametrisation and the samplers are shared with other families
and live in `zoo.diffusion.consistency`.
"""
