"""ViTGAN paper, mixed G x D table, LSUN bedroom 64x64, row "StyleGAN2-G x StyleGAN2-D": the same
run as main_lsun_bedroom64_stylegan2.

An alias of main_lsun_bedroom64_stylegan2 (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_lsun_bedroom64_stylegan2 import get_config  # noqa: F401  # the alias
