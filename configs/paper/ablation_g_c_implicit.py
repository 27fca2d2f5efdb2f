"""ViTGAN paper, generator ablation (CIFAR-10 32x32), row "generator C, implicit output": self-
modulated LayerNorm; implicit neural (Fourier features + modulated MLP) output: ViTGAN.

An alias of main_cifar10_vitgan (the same config; configs/paper/rows.py has the row).
"""

from configs.paper.main_cifar10_vitgan import get_config  # noqa: F401  # the alias
