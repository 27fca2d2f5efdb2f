"""Images as uint8: conversion from G's [-1, 1], grids, PNG files, and the one image-folder lister.

A leaf module: numpy, PIL (when writing a PNG or reading a folder), jax.numpy for the
on-device conversion. TensorFlow only for gs:// paths.
"""

import os

import jax.numpy as jnp
import numpy as np

# What a folder of images may hold (training data, FID sets): one list for both readers, what
# tf.io.decode_image (training) and PIL (FID, reference statistics) both decode.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')


def to_uint8(images) -> np.ndarray:
  """NHWC floats in [-1, 1] -> uint8 [0, 255] (rounded, clipped), on the host."""
  images = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def to_uint8_device(images):
  """`to_uint8` in jax.numpy, for use under jit (the samples never leave the device as floats)."""
  images = (images.astype(jnp.float32) + 1.0) * 127.5
  return jnp.clip(jnp.round(images), 0, 255).astype(jnp.uint8)


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
  from PIL import Image  # pylint: disable=g-import-not-at-top  # only when a PNG is written
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


def list_image_files(folder: str, walk=os.walk, isdir=os.path.isdir, field: str = '') -> list:
  """Sorted image files under `folder`, recursively; `walk` / `isdir` may be tf.io.gfile's.

  Raises FileNotFoundError for a missing folder or one without images (naming `field`, the
  config key the folder came from, when given).
  """
  where = f' ({field})' if field else ''
  if not isdir(folder):
    raise FileNotFoundError(f'No such folder: {folder!r}{where}.')
  files = sorted(os.path.join(root, name) for root, _, names in walk(folder) for name in names
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise FileNotFoundError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) under {folder!r}{where}.')
  return files
