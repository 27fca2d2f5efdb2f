"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "ViTGAN-G x ViTGAN-D".

An alias of main_celeba64_vitgan (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_celeba64_vitgan import get_config  # noqa: F401  # the alias
