"""ViTGAN paper, discriminator ablation (CIFAR-10 32x32), row "ViTGAN's D: L2 attention, ISN,
overlapping patches".

An alias of main_cifar10_vitgan (the same config; configs/paper/rows.py has the row).
"""

from configs.paper.main_cifar10_vitgan import get_config  # noqa: F401  # the alias
