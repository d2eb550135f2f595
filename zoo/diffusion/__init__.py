"""What the generative families share (issue #12).

The families that generate or restore images through a diffusion or consistency model (latent
consistency training, noise consistency training, and later ones) build on the same few pieces,
kept here so that no family imports another:

- `autoencoder`: the latent stage. Small diffusers `AutoencoderKL` configs (micro f4 / f8) and
  the Stable Diffusion f8 config as the paper-size reference; their training objective (L1 +
  perceptual + KL, as the LDM autoencoders); `LatentCodec`, which turns images in [0, 1] into
  standardised latents (per-channel statistics, sigma_data = 0.5 as sLCT) and back; the
  tensor-in/tensor-out encode and decode graphs that export on their own; and loaders for our
  weights and for local diffusers / Stable Diffusion folders.
- `consistency`: noise schedules (Karras sigmas), the consistency parametrisation (c_skip,
  c_out, c_in of iCT/EDM), discretisation curricula and the few-step sampler. Samplers loop in
  Python over graph calls (`denoise(x, sigma) -> x0`), so the same loop runs over PyTorch,
  ONNX Runtime or TensorRT.
- `interop`: saving and loading diffusers model folders (`save_pretrained` / `from_pretrained`,
  local files only) so our trained nets open in plain diffusers and theirs in ours.

Nothing here reaches a model hub: every loader reads a local path and says what is missing.
The package's `__init__` imports nothing, so a family that needs only the schedules does not
pay for importing diffusers.
"""
