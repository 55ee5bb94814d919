"""Local diffusion models: render presets, offline tiny pipelines, and the render calls."""
