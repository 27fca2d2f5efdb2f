"""ViTGAN paper, mixed G x D table, LSUN bedroom 64x64, row "ViTGAN-G x ViTGAN-D": the same run as
main_lsun_bedroom64_vitgan.

Paper's number: not found (wiz lists FID 1.49 for an unlabeled ViTGAN variant).
"""

from configs.paper import main_lsun_bedroom64_vitgan


def get_config():
  return main_lsun_bedroom64_vitgan.get_config()
