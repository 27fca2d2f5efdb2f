"""Building blocks shared by every model: equalized-LR dense, spectral norm, SLN, attention.

All modules are Flax linen and pure functions of their variables. Spectral-norm state lives
in the `spectral` collection: pass `mutable=['spectral']` and `train=True` to advance it.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

SPECTRAL = 'spectral'  # collection holding power-iteration vectors and sigma(W_init)
DIAGNOSTICS = 'intermediates'  # sown only when mutable: attention maps, sigma(W) (see health.py)
SPECTRAL_MODES = ('none', 'sn', 'isn')
ATTENTION_KINDS = ('dot', 'l2')
L2_FORMS = ('bias', 'augmented')

Dtype = Any


def check_choice(field: str, value: str, choices) -> None:
  """Raises a ValueError naming the config field when `value` is not allowed."""
  if value not in choices:
    raise ValueError(f'{field}={value!r} is not one of {tuple(choices)}')


def _l2_normalize(x, eps=1e-12):
  return x * jax.lax.rsqrt(jnp.sum(x * x) + eps)


def power_iteration(w_mat: jnp.ndarray, u: jnp.ndarray, steps: int):
  """`steps` power iterations on W^T W from u; returns (u, sigma) with sigma = ||W u||."""
  def body(_, u):
    return _l2_normalize(w_mat.T @ _l2_normalize(w_mat @ u))
  u = jax.lax.fori_loop(0, steps, body, u)
  return u, jnp.linalg.norm(w_mat @ u)


class SpectralNorm(nn.Module):
  """Normalizes a weight matrix by its top singular value (one wrapper, three modes).

  mode 'none': W.  'sn': W / sigma(W).  'isn' (ViTGAN's improved SN): W * sigma(W_init) / sigma(W),
  where sigma(W_init), the top singular value at initialization, is stored as a constant.
  sigma(W) is estimated by power iteration; the vector u is advanced only when `update` is true
  and the `spectral` collection is mutable. At init, `init_iterations` power iterations give u
  and sigma(W_init): measured within 1.1e-7 (relative) of numpy's SVD on all 22 layers of the
  CIFAR D at 1000 iterations (200 left them up to 6.6e-4 low); an exact SVD takes seconds per
  matrix on CPU. With 'intermediates' mutable it sows sigma(W) and,
  for 'isn', sigma(W) / sigma(W_init), for the training-health diagnostics.
  """
  mode: str = 'sn'
  power_iterations: int = 1
  init_iterations: int = 1000

  @nn.compact
  def __call__(self, w: jnp.ndarray, update: bool = False) -> jnp.ndarray:
    check_choice('spectral_norm', self.mode, SPECTRAL_MODES)
    if self.mode == 'none':
      return w
    w_mat = w.reshape(-1, w.shape[-1]).astype(jnp.float32)  # (fan_in, fan_out)

    def init_u():
      u0 = _l2_normalize(jnp.ones((w_mat.shape[1],), jnp.float32))
      return power_iteration(w_mat, u0, self.init_iterations)[0]

    u_var = self.variable(SPECTRAL, 'u', init_u)
    u = u_var.value
    if update and self.is_mutable_collection(SPECTRAL) and not self.is_initializing():
      u = jax.lax.stop_gradient(power_iteration(w_mat, u, self.power_iterations)[0])
      u_var.value = u
    wu = w_mat @ u
    v = jax.lax.stop_gradient(_l2_normalize(wu))
    sigma = v @ wu  # v^T W u with v, u held: gradient v u^T; W is read once here, not twice
    scale = 1.0 / sigma
    self.sow(DIAGNOSTICS, 'sigma', jax.lax.stop_gradient(sigma))
    if self.mode == 'isn':
      sigma_init = self.variable(
          SPECTRAL, 'sigma_init',
          lambda: jax.lax.stop_gradient(power_iteration(w_mat, u, 0)[1])).value
      scale = scale * sigma_init
      self.sow(DIAGNOSTICS, 'sigma_ratio', jax.lax.stop_gradient(sigma / sigma_init))
    return (w * scale).astype(w.dtype)


def equalized_kernel(module: nn.Module, shape, *, train: bool, lr_mul: float = 1.0,
                     init_scale: float = 1.0, equalized: bool = True,
                     spectral_norm: str = 'none', power_iterations: int = 1) -> jnp.ndarray:
  """Creates `module`'s 'kernel' param and returns it as used: LR-equalized, then normalized.

  Equalized LR (StyleGAN): stored N(0, 1 / lr_mul^2), multiplied at call time by the gain
  init_scale * lr_mul / sqrt(fan_in). `init_scale` is part of the run-time gain, not of the stored
  value: every stored weight then has the same scale, so one Adam step moves each layer by the
  same relative amount (a weight stored at std 0.1 would move 10x faster relative to itself).
  The last axis is fan-out; all others are fan-in.
  """
  fan_in = math.prod(shape[:-1])
  if equalized:
    init = lambda rng, s: jax.random.normal(rng, s) / lr_mul  # noqa: E731
    scale = init_scale * lr_mul / math.sqrt(fan_in)
  else:
    init = lambda rng, s: nn.initializers.xavier_uniform()(rng, s) * init_scale  # noqa: E731
    scale = 1.0
  kernel = module.param('kernel', init, tuple(shape)) * scale
  return SpectralNorm(spectral_norm, power_iterations, name='sn')(kernel, train)


def scaled_bias(module: nn.Module, features: int, lr_mul: float = 1.0,
                init: float = 0.0) -> jnp.ndarray:
  """Creates `module`'s 'bias' param, stored divided by lr_mul and returned multiplied by it."""
  return module.param('bias', nn.initializers.constant(init / lr_mul), (features,)) * lr_mul


class EqualDense(nn.Module):
  """Dense layer with equalized learning rate (StyleGAN) and optional spectral norm."""
  features: int
  use_bias: bool = True
  lr_mul: float = 1.0
  bias_init: float = 0.0
  init_scale: float = 1.0
  equalized: bool = True
  spectral_norm: str = 'none'
  power_iterations: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    kernel = equalized_kernel(
        self, (x.shape[-1], self.features), train=train, lr_mul=self.lr_mul,
        init_scale=self.init_scale, equalized=self.equalized,
        spectral_norm=self.spectral_norm, power_iterations=self.power_iterations)
    dtype = self.dtype or x.dtype
    y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
    if self.use_bias:
      y = y + scaled_bias(self, self.features, self.lr_mul, self.bias_init).astype(dtype)
    return y


def leaky_relu_gain(x: jnp.ndarray) -> jnp.ndarray:
  """StyleGAN's leaky ReLU (slope 0.2) with gain sqrt(2), keeping activations at unit scale."""
  return nn.leaky_relu(x, 0.2) * math.sqrt(2.0)


def pixel_norm(z: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
  return z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + eps)


class MappingNetwork(nn.Module):
  """z -> w: PixelNorm then `depth` equalized-LR layers with leaky ReLU (StyleGAN)."""
  width: int
  depth: int = 8
  lr_mul: float = 0.01

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    w = pixel_norm(z.astype(jnp.float32))
    for i in range(self.depth):
      w = leaky_relu_gain(EqualDense(self.width, lr_mul=self.lr_mul, name=f'fc{i}')(w))
    return w


def layer_norm_no_affine(x: jnp.ndarray, eps: float) -> jnp.ndarray:
  """LayerNorm over the last axis without scale or bias, computed in float32."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  return (x32 - mean) * jax.lax.rsqrt(var + eps)


class SelfModulatedLayerNorm(nn.Module):
  """SLN(h, w) = LN(h) * (1 + gamma(w)) + beta(w), gamma and beta linear in w (ViTGAN)."""
  eps: float = 1e-3

  @nn.compact
  def __call__(self, h: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    features = h.shape[-1]
    gamma = EqualDense(features, name='gamma')(w.astype(jnp.float32))
    beta = EqualDense(features, name='beta')(w.astype(jnp.float32))
    if h.ndim == 3:  # one w per image, broadcast over tokens
      gamma, beta = gamma[:, None, :], beta[:, None, :]
    out = layer_norm_no_affine(h, self.eps) * (1.0 + gamma) + beta
    return out.astype(h.dtype)


class FourierFeatures(nn.Module):
  """sin(W c + b) of coordinates c in [-1, 1] (the paper's Fourier / sinusoidal encoding).

  W ~ U(+-init_scale / sqrt(fan_in)); 3.0 gives [code]'s U(+-sqrt(9/2)) for 2-d coordinates and
  sets the frequency band the features cover.
  """
  features: int
  init_scale: float = 3.0

  @nn.compact
  def __call__(self, coords: jnp.ndarray) -> jnp.ndarray:
    bound = self.init_scale / math.sqrt(coords.shape[-1])
    kernel = self.param(
        'kernel', lambda rng, s: jax.random.uniform(rng, s, minval=-bound, maxval=bound),
        (coords.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.uniform(2 * math.pi), (self.features,))
    return jnp.sin(coords @ kernel + bias)


def grid_coordinates(height: int, width: int) -> jnp.ndarray:
  """(height*width, 2) pixel-centre coordinates (y, x) normalized to [-1, 1], row-major."""
  ys = (jnp.arange(height) + 0.5) / height * 2 - 1
  xs = (jnp.arange(width) + 0.5) / width * 2 - 1
  yy, xx = jnp.meshgrid(ys, xs, indexing='ij')
  return jnp.stack([yy.ravel(), xx.ravel()], axis=-1)


class ModulatedDense(nn.Module):
  """StyleGAN2 / CIPS modulated linear layer, one weight per style vector.

  y = x @ (W * s[:, None]) / sqrt(sum_in (W s)^2 + eps) with s = affine(style). Computed without
  per-sample weights: modulate the input, then rescale the output by the demodulation factor.
  x: (..., T, in); style: (..., style_dim) broadcast over T.
  """
  features: int
  demodulate: bool = True
  use_bias: bool = True
  eps: float = 1e-8
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
    fan_in = x.shape[-1]
    s = EqualDense(fan_in, bias_init=1.0, name='affine')(style)  # starts as identity modulation
    kernel = equalized_kernel(self, (fan_in, self.features), train=False)
    dtype = self.dtype or x.dtype
    y = jnp.einsum('...ti,io->...to', (x * s[..., None, :]).astype(dtype), kernel.astype(dtype))
    if self.demodulate:
      demod = jax.lax.rsqrt(jnp.square(s) @ jnp.square(kernel) + self.eps)
      y = y * demod[..., None, :].astype(dtype)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(dtype)
    return y


def l2_attention_bias(k: jnp.ndarray, head_dim: int) -> jnp.ndarray:
  """Per-key bias -||k||^2 / sqrt(d) that turns 2 q.k / sqrt(d) into L2-distance logits.

  -||q - k||^2 = 2 q.k - ||k||^2 - ||q||^2, and ||q||^2 is constant over keys so it cancels in
  the softmax: L2 attention is dot-product attention with scale 2/sqrt(d) and this bias.
  k: (B, S, H, d) -> bias (B, H, 1, S) in float32.
  """
  sq = jnp.sum(jnp.square(k.astype(jnp.float32)), axis=-1)  # (B, S, H)
  return -jnp.transpose(sq, (0, 2, 1))[:, :, None, :] / math.sqrt(head_dim)


def l2_attention_augmented(q: jnp.ndarray, k: jnp.ndarray, tau=None):
  """(q', k') whose plain dot product q'.k' is 2 tau q.k - tau ||k||^2: L2 logits without a bias.

  q' = [2 tau q, -tau, 0...], k' = [k, ||k||^2, 0...], zero-padded to a multiple of 8 channels
  so fused kernels (cuDNN's flash attention: no bias, head dim % 8 == 0) take it; with the
  scale 1/sqrt(d) this is `l2_attention_bias`'s form, ||q||^2 again cancelling in the softmax.
  q, k: (B, S, H, d); tau: (H,) or None.
  """
  d = q.shape[-1]
  pad = -(d + 1) % 8
  sq = jnp.sum(jnp.square(k.astype(jnp.float32)), axis=-1, keepdims=True).astype(k.dtype)
  minus_one = -jnp.ones(q.shape[:-1] + (1,), q.dtype)
  q2 = 2 * q
  if tau is not None:
    q2, minus_one = q2 * tau[:, None].astype(q.dtype), minus_one * tau[:, None].astype(q.dtype)
  zeros = lambda t: jnp.zeros(t.shape[:-1] + (pad,), t.dtype)  # noqa: E731
  return (jnp.concatenate([q2, minus_one, zeros(q)], axis=-1),
          jnp.concatenate([k, sq, zeros(k)], axis=-1))


class Attention(nn.Module):
  """Multi-head self-attention; `kind` 'dot' (scaled dot product) or 'l2' (tied W_q = W_k).

  L2 attention (Kim et al. 2021, used by ViTGAN's discriminator): logits = -||x W_q - x W_q||^2
  / sqrt(d_head) with one shared projection for queries and keys (no bias: it would cancel).
  Both run through jax.nn.dot_product_attention, which can dispatch to a fused kernel.
  `l2_form` says how L2 logits reach it: 'bias' (scale 2/sqrt(d) and a per-key bias) or
  'augmented' (one extra channel on q and k, no bias: what cuDNN's fused kernel accepts).
  `learned_temperature` multiplies each head's logits by tau_h = exp(lr_mul * t_h), t_h = 0 at
  init ([code]'s learnable tau, PAPER.md Sec. 1): under ISN the tied W_qk keeps its initial
  spectral norm, so without tau the small qk_init_scale would fix the attention near uniform.
  """
  num_heads: int
  kind: str = 'dot'
  spectral_norm: str = 'none'
  power_iterations: int = 1
  equalized: bool = True
  qk_init_scale: float = 1.0
  learned_temperature: bool = False
  temperature_lr_mul: float = 10.0
  dtype: Optional[Dtype] = None
  l2_form: str = 'bias'

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    check_choice('attention', self.kind, ATTENTION_KINDS)
    check_choice('l2_form', self.l2_form, L2_FORMS)
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={width}')
    head_dim = width // self.num_heads
    dense = lambda n, name, **kw: EqualDense(  # noqa: E731
        n, equalized=self.equalized, spectral_norm=self.spectral_norm,
        power_iterations=self.power_iterations, dtype=self.dtype, name=name, **kw)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head_dim))  # noqa: E731
    v = split(dense(width, 'value')(x, train))
    if self.kind == 'l2':
      q = split(dense(width, 'query_key', use_bias=False, init_scale=self.qk_init_scale)(x, train))
      k = q  # tied: W_q and W_k are one parameter
      bias = l2_attention_bias(k, head_dim).astype(q.dtype)
      scale = 2.0 / math.sqrt(head_dim)
    else:
      q = split(dense(width, 'query', init_scale=self.qk_init_scale)(x, train))
      k = split(dense(width, 'key', init_scale=self.qk_init_scale)(x, train))
      bias, scale = None, 1.0 / math.sqrt(head_dim)
    tau = None
    if self.learned_temperature:  # tau * (scale q.k + bias), with q scaled after k was taken
      log_tau = self.param('log_temperature', nn.initializers.zeros, (self.num_heads,))
      tau = jnp.exp(log_tau * self.temperature_lr_mul)
    if self.kind == 'l2' and self.l2_form == 'augmented':
      q, k = l2_attention_augmented(q, k, tau)
      bias, scale = None, 1.0 / math.sqrt(head_dim)
      v = jnp.pad(v, ((0, 0),) * 3 + ((0, q.shape[-1] - head_dim),))  # same head dim as q, k
    elif tau is not None:
      q = q * tau[:, None].astype(q.dtype)
      bias = None if bias is None else bias * tau[None, :, None, None].astype(bias.dtype)
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale)[..., :head_dim]
    if self.is_mutable_collection(DIAGNOSTICS):  # the maps, for health.py only (B, H, Q, K)
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) * scale
      self.sow(DIAGNOSTICS, 'attention_probs',
               jax.nn.softmax(logits if bias is None else logits + bias, axis=-1))
      if self.learned_temperature:
        self.sow(DIAGNOSTICS, 'temperature', jnp.mean(tau))
    out = out.reshape(out.shape[:-2] + (width,))
    return dense(width, 'out')(out, train)


class MlpBlock(nn.Module):
  """Transformer MLP: dense -> GELU -> dense.

  Exact (erf) GELU, as ViT and the paper's TF2 code (tf.nn.gelu defaults to approximate=False);
  flax's default tanh approximation differs by up to ~1e-3 per activation.
  """
  mlp_dim: int
  spectral_norm: str = 'none'
  power_iterations: int = 1
  equalized: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    dense = lambda n, name: EqualDense(  # noqa: E731
        n, equalized=self.equalized, spectral_norm=self.spectral_norm,
        power_iterations=self.power_iterations, dtype=self.dtype, name=name)
    h = nn.gelu(dense(self.mlp_dim, 'fc1')(x, train), approximate=False)
    return dense(x.shape[-1], 'fc2')(h, train)


def check_patch_grid(image_size: int, patch_size: int, field: str) -> int:
  """Number of patches per side; ValueError naming `field` if the patch does not tile."""
  if patch_size <= 0 or image_size % patch_size:
    raise ValueError(f'{field}={patch_size} does not divide model.image_size={image_size}')
  return image_size // patch_size


class OverlappingPatchEmbed(nn.Module):
  """P x P grid with stride P, each patch extended by `overlap` pixels per side, then projected.

  Equivalent to flattening the (P+2o)^2*C zero-padded patches and a dense layer to `width`;
  computed as one strided convolution whose kernel is the (spectrally normalized) dense matrix.
  """
  width: int
  patch_size: int
  overlap: int
  spectral_norm: str = 'none'
  power_iterations: int = 1
  equalized: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    k = self.patch_size + 2 * self.overlap
    kernel = equalized_kernel(
        self, (k, k, images.shape[-1], self.width), train=train, equalized=self.equalized,
        spectral_norm=self.spectral_norm, power_iterations=self.power_iterations)
    dtype = self.dtype or images.dtype
    out = jax.lax.conv_general_dilated(
        images.astype(dtype), kernel.astype(dtype), window_strides=(self.patch_size,) * 2,
        padding=[(self.overlap, self.overlap)] * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    out = out + scaled_bias(self, self.width).astype(dtype)
    return out.reshape(out.shape[0], -1, self.width)


# --- Convolutions, resampling and attention of the StyleGAN2, TransGAN and LadaGAN families ---


def group_std(x: jnp.ndarray, group_size: int, what: str, eps: float = 1e-8) -> jnp.ndarray:
  """(N, ...) -> (N / g, ...): the std of every feature over each group of g consecutive examples.

  The core of StyleGAN's minibatch std, shared by the conv and the ViT discriminators. g is
  group_size capped at N; consecutive groups keep the train step's [real; fake] batch apart.
  """
  n = x.shape[0]
  g = min(group_size, n)
  if n % g:
    raise ValueError(f'{what}: batch {n} is not divisible by group size {g}')
  y = x.astype(jnp.float32).reshape(n // g, g, *x.shape[1:])
  y = y - jnp.mean(y, axis=1, keepdims=True)
  return jnp.sqrt(jnp.mean(jnp.square(y), axis=1) + eps)
