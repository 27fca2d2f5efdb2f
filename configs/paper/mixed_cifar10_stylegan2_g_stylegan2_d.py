"""ViTGAN paper, mixed G x D table, CIFAR-10 32x32, row "StyleGAN2-G x StyleGAN2-D": the same run
as main_cifar10_stylegan2.

An alias of main_cifar10_stylegan2 (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_cifar10_stylegan2 import get_config  # noqa: F401  # the alias
