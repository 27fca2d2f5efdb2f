"""ViTGAN discriminator: overlapping patches, CLS token, L2 attention, improved spectral norm.

Every dense layer (patch projection, attention, MLP, head) goes through the one spectral-norm
wrapper with `spectral_norm` in {'isn', 'sn', 'none'}; weights use equalized learning rate,
which kept D's logits stable at lr 2e-3 (PAPER.md Sec. 6).
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vitgan_jax.models import layers

POS_EMBED_STD = 0.02  # ViT's initial scale of the class token and position embeddings


def token_minibatch_std(h: jnp.ndarray, group_size: int, eps: float = 1e-8) -> jnp.ndarray:
  """(B, T, D) tokens -> (B, T, 1): per token, the std over a group of examples, mean over D.

  StyleGAN's minibatch std per token: a G whose samples share one layout gives a small std at
  every token. Groups are `group_size` consecutive examples (layers.group_std, as the conv D),
  so the train step's [real; fake] batch never mixes reals and fakes in a group.
  """
  y = layers.group_std(h, group_size, 'minibatch std (model.discriminator.minibatch_std_group)',
                       eps).mean(axis=-1)                            # (n/g, t)
  g = h.shape[0] // y.shape[0]
  return jnp.repeat(y, g, axis=0)[..., None].astype(h.dtype)     # (n, t, 1)


class DiscriminatorBlock(nn.Module):
  """Pre-LN ViT block: h' = h + MSA(LN(h)); out = h' + MLP(LN(h'))."""
  num_heads: int
  mlp_dim: int
  attention: str = 'l2'
  spectral_norm: str = 'isn'
  power_iterations: int = 1
  qk_init_scale: float = 1.0
  learned_temperature: bool = False
  dtype: Optional[Any] = None
  l2_form: str = 'bias'

  @nn.compact
  def __call__(self, h, train: bool = False):
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name=name)  # noqa: E731
    h = h + layers.Attention(
        self.num_heads, self.attention, self.spectral_norm, self.power_iterations,
        qk_init_scale=self.qk_init_scale, learned_temperature=self.learned_temperature,
        dtype=self.dtype, l2_form=self.l2_form, name='attention')(
            ln('norm1')(h).astype(h.dtype), train)
    h = h + layers.MlpBlock(self.mlp_dim, self.spectral_norm, self.power_iterations,
                            dtype=self.dtype, name='mlp')(ln('norm2')(h).astype(h.dtype), train)
    return h


class ViTDiscriminator(nn.Module):
  """images (B, H, W, C) in [-1, 1] -> one logit per image (B,)."""
  image_size: int
  patch_size: int = 4
  overlap: int = 2
  depth: int = 4
  width: int = 384
  mlp_dim: int = 1536
  num_heads: int = 6
  attention: str = 'l2'
  spectral_norm: str = 'isn'
  power_iterations: int = 1
  qk_init_scale: float = 0.1
  learned_temperature: bool = False
  l2_form: str = 'bias'          # how L2 logits are computed (layers.Attention); same math
  final_norm: bool = True
  minibatch_std_group: int = 0   # > 0: minibatch std per token before the last block
  dtype: Optional[Any] = None

  def validate(self) -> int:
    """Checks the config fields; returns the number of patches per side."""
    layers.check_choice('model.discriminator.attention', self.attention, layers.ATTENTION_KINDS)
    layers.check_choice('model.discriminator.l2_form', self.l2_form, layers.L2_FORMS)
    layers.check_choice('model.discriminator.spectral_norm', self.spectral_norm,
                        layers.SPECTRAL_MODES)
    if self.overlap < 0:
      raise ValueError(f'model.discriminator.overlap={self.overlap} must be >= 0')
    if self.minibatch_std_group < 0:
      raise ValueError(f'model.discriminator.minibatch_std_group={self.minibatch_std_group} '
                       'must be >= 0 (0 turns it off)')
    return layers.check_patch_grid(self.image_size, self.patch_size,
                                   'model.discriminator.patch_size')

  @nn.compact
  def __call__(self, images, train: bool = False):
    grid = self.validate()
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'discriminator expects {self.image_size}x{self.image_size} images, '
                       f'got {images.shape[1]}x{images.shape[2]}')
    dtype = self.dtype or jnp.float32
    h = layers.OverlappingPatchEmbed(
        self.width, self.patch_size, self.overlap, self.spectral_norm, self.power_iterations,
        dtype=self.dtype, name='patch_embed')(images.astype(dtype), train)
    # Equalized LR for the embeddings too: stored N(0, 1), used times POS_EMBED_STD, so Adam
    # moves them at the same relative rate as every other D weight (stored at 0.02 they moved
    # ~10% of their norm per step at lr 2e-3).
    cls = self.param('cls', nn.initializers.zeros, (1, 1, self.width)) * POS_EMBED_STD
    h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.width)).astype(h.dtype), h],
                        axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(1.0), (1, grid * grid + 1, self.width))
    h = h + (pos * POS_EMBED_STD).astype(h.dtype)
    for i in range(self.depth):
      if self.minibatch_std_group and i == self.depth - 1:
        # Lets the last block see how much each token varies over a group of images: a
        # sample-diversity signal no per-image D has (StyleGAN's mbstd; not in the paper).
        h = h + layers.EqualDense(
            self.width, spectral_norm=self.spectral_norm, power_iterations=self.power_iterations,
            dtype=self.dtype, name='minibatch_std')(
                token_minibatch_std(h, self.minibatch_std_group), train)
      h = DiscriminatorBlock(self.num_heads, self.mlp_dim, self.attention, self.spectral_norm,
                             self.power_iterations, self.qk_init_scale,
                             self.learned_temperature, self.dtype, l2_form=self.l2_form,
                             name=f'block{i}')(h, train)
    cls_out = h[:, 0].astype(jnp.float32)
    if self.final_norm:
      cls_out = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name='final_norm')(cls_out)
    logit = layers.EqualDense(1, spectral_norm=self.spectral_norm,
                              power_iterations=self.power_iterations, name='head')(cls_out, train)
    return logit[:, 0].astype(jnp.float32)
