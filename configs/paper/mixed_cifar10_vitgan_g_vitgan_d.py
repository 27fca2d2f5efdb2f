"""ViTGAN paper, mixed G x D table, CIFAR-10 32x32, row "ViTGAN-G x ViTGAN-D": the same run as
main_cifar10_vitgan.

Paper's number: FID 6.66, IS 9.30 (secondary: PwC; the Consistency Models paper's table).
"""

from configs.paper import main_cifar10_vitgan


def get_config():
  return main_cifar10_vitgan.get_config()
