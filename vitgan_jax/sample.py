"""Sampling helpers: [-1, 1] floats to uint8, image grids, PNG export, samples from a workdir."""

import os

import numpy as np


def to_uint8(images) -> np.ndarray:
  """NHWC floats in [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
  images = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
  """(N, H, W, C) with N = rows * cols -> one (rows*H, cols*W, C) image, row-major."""
  n, h, w, c = images.shape
  cols = -(-n // rows)
  if n < rows * cols:
    images = np.concatenate([images, np.zeros((rows * cols - n, h, w, c), images.dtype)])
  grid = images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
  return grid.reshape(rows * h, cols * w, c)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an HWC uint8 image (C = 1 or 3); creates the folder. gs:// paths go through tf.io."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = image[..., 0] if image.shape[-1] == 1 else image
  if path.startswith('gs://'):
    import io  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='PNG')
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(buf.getvalue())
    return
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  Image.fromarray(image).save(path)


def generate(config, workdir: str, num_samples: int, seed: int = 0, use_ema: bool = True,
             batch_size: int = 256, step=None, best: bool = False) -> np.ndarray:
  """uint8 samples (N, H, W, C) from the latest (or `step`, or best-FID) checkpoint."""
  from vitgan_jax import errors, inference  # pylint: disable=g-import-not-at-top
  if num_samples < 1:  # before the restore, so the mistake costs nothing
    raise errors.ConfigError(f'--num_samples {num_samples}: need at least 1 sample')
  gan = inference.load(workdir, config=config, step=step, best=best, use_ema=use_ema)
  return gan.generate(num_samples, seed=seed, batch_size=batch_size)
