"""Local diffusion models: render presets, tiny offline pipelines, and the image/clip model wrappers renderers call."""
