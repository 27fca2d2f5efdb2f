"""ViTGAN generator: mapping net, ViT over Fourier position embeddings, per-patch output.

Variants (how the latent w enters; the paper's generator ablation):
  'A': w added to every position embedding, plain LayerNorm.
  'B': w prepended to the sequence as a token, plain LayerNorm.
  'C': ViTGAN: self-modulated LayerNorm (SLN) everywhere, tokens are position embeddings only.
Output, independently: 'implicit' (Fourier features of pixel coordinates through a 2-layer MLP
modulated by each token, CIPS-style) or 'linear' (token -> P*P*C pixels).
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vitgan_jax.models import layers

VARIANTS = ('A', 'B', 'C')
OUTPUTS = ('implicit', 'linear')
OUTPUT_ACTIVATIONS = ('tanh', 'none')


class Norm(nn.Module):
  """SLN(h, w) for variant C, else a LayerNorm that ignores w."""
  self_modulated: bool
  eps: float = 1e-3

  @nn.compact
  def __call__(self, h, w):
    if self.self_modulated:
      return layers.SelfModulatedLayerNorm(self.eps)(h, w)
    return nn.LayerNorm(epsilon=self.eps, dtype=jnp.float32)(h).astype(h.dtype)


class GeneratorBlock(nn.Module):
  """h' = h + MSA(norm(h, w)); out = h' + MLP(norm(h', w))."""
  num_heads: int
  mlp_dim: int
  self_modulated: bool
  attention: str = 'dot'
  spectral_norm: str = 'none'
  eps: float = 1e-3
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, h, w, train: bool = False):
    norm = lambda name: Norm(self.self_modulated, self.eps, name=name)  # noqa: E731
    h = h + layers.Attention(self.num_heads, self.attention, self.spectral_norm,
                             dtype=self.dtype, name='attention')(norm('norm1')(h, w), train)
    h = h + layers.MlpBlock(self.mlp_dim, self.spectral_norm, dtype=self.dtype,
                            name='mlp')(norm('norm2')(h, w), train)
    return h


class ImplicitPatchDecoder(nn.Module):
  """Decodes each token y_i to a P x P x C patch: f(E_fou; y_i), a 2-layer modulated MLP.

  E_fou are Fourier features of the P*P pixel coordinates (shared by all patches); the first
  layer is modulated + demodulated by y_i, the second (to pixels) modulated only (CIPS ToRGB).
  """
  patch_size: int
  channels: int
  fourier_dim: int
  hidden: int
  fourier_init_scale: float = 3.0
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, tokens):  # (B, L, D) -> (B, L, P*P, C)
    coords = layers.grid_coordinates(self.patch_size, self.patch_size)
    e_fou = layers.FourierFeatures(self.fourier_dim, self.fourier_init_scale,
                                   name='fourier')(coords)
    h = layers.ModulatedDense(self.hidden, dtype=self.dtype, name='fc1')(e_fou, tokens)
    h = layers.leaky_relu_gain(h)
    return layers.ModulatedDense(self.channels, demodulate=False, dtype=self.dtype,
                                 name='to_pixels')(h, tokens)


class ViTGenerator(nn.Module):
  """z (B, latent_dim) -> images (B, H, W, C) in [-1, 1] (with output_activation 'tanh')."""
  image_size: int
  channels: int = 3
  variant: str = 'C'
  output: str = 'implicit'
  patch_size: int = 4
  depth: int = 4
  width: int = 384
  mlp_dim: int = 1536
  num_heads: int = 6
  latent_dim: int = 384
  mapping_layers: int = 8
  mapping_lr_mul: float = 0.01
  attention: str = 'dot'
  spectral_norm: str = 'none'
  fourier_dim: int = 384
  fourier_init_scale: float = 3.0
  inr_hidden: int = 384
  sln_eps: float = 1e-3
  output_activation: str = 'tanh'
  dtype: Optional[Any] = None

  def validate(self) -> int:
    """Checks the config fields; returns the token grid size per side."""
    layers.check_choice('model.generator.variant', self.variant, VARIANTS)
    layers.check_choice('model.generator.output', self.output, OUTPUTS)
    layers.check_choice('model.generator.output_activation', self.output_activation,
                        OUTPUT_ACTIVATIONS)
    layers.check_choice('model.generator.attention', self.attention, layers.ATTENTION_KINDS)
    layers.check_choice('model.generator.spectral_norm', self.spectral_norm,
                        layers.SPECTRAL_MODES)
    return layers.check_patch_grid(self.image_size, self.patch_size,
                                   'model.generator.patch_size')

  @nn.compact
  def __call__(self, z, train: bool = False):
    grid = self.validate()
    batch = z.shape[0]
    w = layers.MappingNetwork(self.width, self.mapping_layers, self.mapping_lr_mul,
                              name='mapping')(z)
    # Position embeddings: sin(linear(token-grid coordinates in [-1, 1])) [T appendix].
    pos = layers.FourierFeatures(self.width, name='pos_embed')(
        layers.grid_coordinates(grid, grid))
    h = jnp.broadcast_to(pos, (batch,) + pos.shape)
    if self.variant == 'A':
      h = h + w[:, None, :]
    elif self.variant == 'B':
      h = jnp.concatenate([w[:, None, :], h], axis=1)
    h = h.astype(self.dtype or jnp.float32)

    self_modulated = self.variant == 'C'
    for i in range(self.depth):
      h = GeneratorBlock(self.num_heads, self.mlp_dim, self_modulated, self.attention,
                         self.spectral_norm, self.sln_eps, self.dtype, name=f'block{i}')(
                             h, w, train)
    y = Norm(self_modulated, self.sln_eps, name='final_norm')(h, w)
    if self.variant == 'B':
      y = y[:, 1:]

    if self.output == 'implicit':
      patches = ImplicitPatchDecoder(self.patch_size, self.channels, self.fourier_dim,
                                     self.inr_hidden, self.fourier_init_scale, self.dtype,
                                     name='decoder')(y)
    else:
      patches = layers.EqualDense(self.patch_size ** 2 * self.channels, dtype=self.dtype,
                                  name='decoder')(y)
    images = stitch_patches(patches.astype(jnp.float32), grid, self.patch_size,
                            self.channels)
    return jnp.tanh(images) if self.output_activation == 'tanh' else images


def stitch_patches(patches, grid: int, patch_size: int, channels: int):
  """(B, grid*grid, P*P*C) row-major patches -> (B, grid*P, grid*P, C) image."""
  batch = patches.shape[0]
  x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, grid * patch_size, grid * patch_size, channels)
