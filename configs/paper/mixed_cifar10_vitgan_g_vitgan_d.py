"""ViTGAN paper, mixed G x D table, CIFAR-10 32x32, row "ViTGAN-G x ViTGAN-D".

An alias of main_cifar10_vitgan (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_cifar10_vitgan import get_config  # noqa: F401  # the alias
