"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "StyleGAN2-G x StyleGAN2-D".

An alias of main_celeba64_stylegan2 (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_celeba64_stylegan2 import get_config  # noqa: F401  # the alias
