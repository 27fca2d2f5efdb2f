"""GAN losses and regularizers on discriminator logits: NS-logistic, bCR, R1, LeCam.

Pure functions; logits may be [B] or [B, 1] and are reduced in float32 whatever the
compute dtype. Regularizer weights (lambda, gamma / 2, ...) are applied by the caller.
"""

import jax
import jax.numpy as jnp


def _flat(logits):
  return jnp.reshape(logits, (-1,)).astype(jnp.float32)


def d_logistic_loss(real_logits, fake_logits):
  """Discriminator logistic loss: E[softplus(-D(x))] + E[softplus(D(G(z)))]."""
  return (jnp.mean(jax.nn.softplus(-_flat(real_logits)))
          + jnp.mean(jax.nn.softplus(_flat(fake_logits))))


def g_logistic_loss(fake_logits):
  """Non-saturating generator loss: E[softplus(-D(G(z)))]."""
  return jnp.mean(jax.nn.softplus(-_flat(fake_logits)))


def bcr_penalty(logits, logits_augmented):
  """Balanced consistency regularization (Zhao et al.): E[(D(x) - D(T(x)))^2]."""
  return jnp.mean(jnp.square(_flat(logits) - _flat(logits_augmented)))


def r1_penalty(d_fn, images):
  """R1 (Mescheder et al.): E_x ||grad_x D(x)||^2, the squared norm summed over pixels.

  d_fn maps images -> logits [B]; examples are independent, so the gradient of the
  summed logits gives every example's own input gradient in one backward pass.
  """
  grads = jax.grad(lambda x: jnp.sum(_flat(d_fn(x))))(images)
  grads = grads.astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


def lecam_penalty(real_logits, fake_logits, anchor_real, anchor_fake):
  """LeCam regularizer (Tseng et al., 2021) against EMA anchors of past logits.

  E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]; anchors are constants.
  """
  anchor_real = jax.lax.stop_gradient(anchor_real)
  anchor_fake = jax.lax.stop_gradient(anchor_fake)
  return (jnp.mean(jnp.square(jax.nn.relu(_flat(real_logits) - anchor_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(anchor_real - _flat(fake_logits)))))


def update_lecam_anchors(anchor_real, anchor_fake, real_logits, fake_logits, decay):
  """EMA of the mean real / fake logits: a <- decay * a + (1 - decay) * mean(logits).

  Returns (new_anchor_real, new_anchor_fake); no gradient flows into the anchors.
  """
  real_logits = jax.lax.stop_gradient(real_logits)
  fake_logits = jax.lax.stop_gradient(fake_logits)
  new_real = decay * anchor_real + (1.0 - decay) * jnp.mean(_flat(real_logits))
  new_fake = decay * anchor_fake + (1.0 - decay) * jnp.mean(_flat(fake_logits))
  return new_real, new_fake


def average_pool(images: jax.Array, factor: int) -> jax.Array:
  """NHWC images averaged over factor x factor blocks (the low-res input of SR co-training)."""
  b, h, w, c = images.shape
  return images.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
