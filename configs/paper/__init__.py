"""One config per row of the ViTGAN paper's result tables (see common.py and each docstring)."""
