"""vitgan_jax: ViTGAN and related transformer GANs in JAX/Flax."""
