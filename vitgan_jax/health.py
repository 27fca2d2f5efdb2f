"""Training-health diagnostics: is the discriminator still looking at its input?

A GAN whose D stops depending on its input still logs plausible losses (d_loss = 2 ln 2, tiny
bCR terms), so these numbers are computed apart from the step, every logging interval, on a
slice of the batch and on clean (un-augmented) images:
- `d_gap`: mean D(real) - mean D(G(z)) (live G);
- `d_sensitivity`: mean over real images of ||grad_x D(x)||, D's input sensitivity;
- per attention block, `attn_entropy` (mean row entropy / log(tokens): 1 uniform, 0 one-hot)
  and `attn_cls_to_patches` (attention mass from the class token to the patch tokens), and
  `attn_temperature` (mean tau over heads) where the temperature is learned;
- per spectrally normalized layer, `sigma_ratio` = sigma(W) / sigma(W_init) ('isn') or
  `sigma` = sigma(W) ('sn').
`StallAlarm` turns a run of intervals with a blind D into one warning line.
"""

from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vitgan_jax.models import layers, vit_discriminator


def _sown(tree, name: str, prefix: str = '') -> Dict[str, jax.Array]:
  """{'block0/attention': value} for every `name` sown under `tree` (Flax intermediates)."""
  found = {}
  for key, value in tree.items():
    if key == name:
      found[prefix.rstrip('/')] = value[0]
    elif isinstance(value, dict):
      found.update(_sown(value, name, f'{prefix}{key}/'))
  return found


def _attention_stats(probs: jax.Array, has_cls: bool) -> Dict[str, jax.Array]:
  """probs (B, H, Q, K) -> normalized entropy and class-token-to-patch mass."""
  probs = probs.astype(jnp.float32)
  entropy = -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)
  stats = {'attn_entropy': jnp.mean(entropy) / np.log(probs.shape[-1])}
  if has_cls:
    stats['attn_cls_to_patches'] = jnp.mean(jnp.sum(probs[:, :, 0, 1:], axis=-1))
  return stats


def make_health_fn(generator, discriminator, latent_dim: int,
                   num_examples: int = 32) -> Callable:
  """Returns jitted health(state, images, rng) -> {name: scalar}; images: the real batch."""
  has_cls = isinstance(discriminator, vit_discriminator.ViTDiscriminator)  # token 0 is CLS

  def health(state, images, rng):
    real = images[:num_examples].astype(jnp.float32)
    n = real.shape[0]
    z = jax.random.normal(rng, (n, latent_dim))
    fake = generator.apply({'params': state.g_params, **state.g_state}, z)
    d_vars = {'params': state.d_params, **state.d_state}
    input_grads = jax.grad(lambda x: jnp.sum(discriminator.apply(d_vars, x)))(real)
    per_image = jnp.sqrt(jnp.sum(jnp.square(input_grads), axis=(1, 2, 3)))
    logits, sown = discriminator.apply(d_vars, jnp.concatenate([real, fake.astype(real.dtype)]),
                                       mutable=[layers.DIAGNOSTICS])
    sown = sown.get(layers.DIAGNOSTICS, {})
    out = {'d_gap': jnp.mean(logits[:n]) - jnp.mean(logits[n:]),
           'd_sensitivity': jnp.mean(per_image)}
    for where, probs in _sown(sown, 'attention_probs').items():
      for stat, value in _attention_stats(probs, has_cls).items():
        out[f'{stat}/{where}'] = value
    for where, value in _sown(sown, 'temperature').items():
      out[f'attn_temperature/{where}'] = value
    for where, value in _sown(sown, 'sigma_ratio').items():
      out[f'sigma_ratio/{where}'] = value
    if not any(k.startswith('sigma_ratio/') for k in out):
      for where, value in _sown(sown, 'sigma').items():
        out[f'sigma/{where}'] = value
    return out

  return jax.jit(health)


def summary(scalars: Dict[str, float]) -> Dict[str, float]:
  """The per-layer diagnostics reduced to a few numbers for the one-line stdout report."""
  out = {}
  for prefix in ('attn_entropy', 'attn_cls_to_patches', 'attn_temperature', 'sigma_ratio',
                 'sigma'):
    values = [v for k, v in scalars.items() if k.startswith(prefix + '/')]
    if values:
      out[f'{prefix}_min'] = float(np.min(values))
      out[f'{prefix}_max'] = float(np.max(values))
  return out


class StallAlarm:
  """Fires once D has been blind for `patience` logging intervals in a row.

  Blind: |d_gap| < max_gap and d_sensitivity < max_sensitivity. `update` returns the warning
  line the first time (and again after D recovers and goes blind anew), else None.
  """

  def __init__(self, max_gap: float, max_sensitivity: float, patience: int):
    self.max_gap, self.max_sensitivity, self.patience = max_gap, max_sensitivity, patience
    self.blind_since: Optional[int] = None
    self.count = 0
    self.fired = False

  def update(self, step: int, scalars: Dict[str, Any]) -> Optional[str]:
    gap, sensitivity = float(scalars['d_gap']), float(scalars['d_sensitivity'])
    if abs(gap) >= self.max_gap or sensitivity >= self.max_sensitivity:
      self.count, self.blind_since, self.fired = 0, None, False
      return None
    self.count += 1
    self.blind_since = step if self.blind_since is None else self.blind_since
    if self.count < self.patience or self.fired:
      return None
    self.fired = True
    return (f'warning: the discriminator has stopped looking at its input at step {step} '
            f'(blind since step {self.blind_since}, {self.count} logging intervals): '
            f'D(real) - D(fake) = {gap:.2e} (alarm below {self.max_gap:g}), mean |grad_x D| = '
            f'{sensitivity:.2e} (alarm below {self.max_sensitivity:g}); G gets no signal. See '
            "README 'Training health'.")
