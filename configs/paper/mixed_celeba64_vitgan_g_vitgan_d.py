"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "ViTGAN-G x ViTGAN-D": the same run as
main_celeba64_vitgan.

Paper's number: FID 3.74 (secondary: wiz, "19k samples"; LadaGAN README).
"""

from configs.paper import main_celeba64_vitgan


def get_config():
  return main_celeba64_vitgan.get_config()
