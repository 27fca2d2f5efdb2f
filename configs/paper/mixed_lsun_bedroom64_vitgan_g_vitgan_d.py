"""ViTGAN paper, mixed G x D table, LSUN bedroom 64x64, row "ViTGAN-G x ViTGAN-D".

An alias of main_lsun_bedroom64_vitgan (the same run; configs/paper/rows.py has the row).
"""

from configs.paper.main_lsun_bedroom64_vitgan import get_config  # noqa: F401  # the alias
