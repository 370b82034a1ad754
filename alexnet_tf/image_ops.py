"""Small image ops that the augmentation, the evaluation crops and serving are built from.

Pure TensorFlow, graph mode and eager, no state. Images are [..., H, W, C] (one image or a
batch); pixels are uint8 when decoded and float32 on 0-255 once the mean is subtracted.

Two speed rules behind the shapes used here (measured on the training input's CPU path):
  - Channel constants are added with `add_per_channel`, not `x + values`: TF broadcasts a [3]
    vector over [H, W, 3] element by element, ~10x slower than an add of equal shapes, while
    a tiled [W * 3] row broadcast over [H, W * 3] is vectorised.
  - Windows of a large batch are cut with one slice per image (`slice_windows`): a slice
    copies whole rows, while a batched gather over columns copies 3 values per index (the
    float stage of 128 227x227 crops ran 2.3x slower with gathers). For tiny images the
    two gathers of `crop_flip_batch` win, because per-op overhead dominates.
"""

from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

ArrayLike = Union[np.ndarray, Sequence[float]]


def spatial_size(image: tf.Tensor):
  """(height, width) of [..., H, W, C]: Python ints when static, else scalar tensors."""
  height, width = image.shape[-3], image.shape[-2]
  if height is None or width is None:
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
  return height, width


def window_offset(position, height, width, crop_size: int) -> tf.Tensor:
  """Uniform positions [..., 2] on [0, 1) -> int32 [..., 2] corners (y, x) of crop windows.

  Each of the size - crop_size + 1 positions along an axis is equally likely, the last one
  included. `height` and `width` may be ints or scalar tensors.
  """
  positions = tf.cast(tf.stack([height, width]) - crop_size + 1, tf.int32)
  offset = tf.cast(position * tf.cast(positions, tf.float32), tf.int32)  # floor: position >= 0
  # float rounding can reach `positions` itself for a position just below 1.
  return tf.minimum(offset, positions - 1)


def crop(image: tf.Tensor, offset, crop_size: int) -> tf.Tensor:
  """The window [y : y + crop, x : x + crop] of [..., H, W, C] -> [..., crop, crop, C]."""
  offset = tf.cast(offset, tf.int32)
  lead = image.shape.rank - 3
  begin = tf.concat([[0] * lead, offset, [0]], axis=0)
  window = tf.slice(image, begin, [-1] * lead + [crop_size, crop_size, -1])
  window.set_shape(image.shape[:lead].concatenate([crop_size, crop_size, image.shape[-1]]))
  return window


def flip_left_right(image: tf.Tensor) -> tf.Tensor:
  """Horizontal mirror, `x[..., :, ::-1, :]`, of [..., H, W, C]."""
  return tf.reverse(image, axis=[-2])


def mirror_if(image: tf.Tensor, flip: Optional[tf.Tensor]) -> tf.Tensor:
  """[..., H, W, C] mirrored where the scalar bool `flip` holds (None: never)."""
  if flip is None:
    return image
  return tf.cond(flip, lambda: flip_left_right(image), lambda: image)


def pad_image(image: tf.Tensor, pad: int) -> tf.Tensor:
  """Zero padding of `pad` pixels on each side of the spatial axes of [..., H, W, C]."""
  if pad == 0:
    return image
  paddings = [[0, 0]] * (image.shape.rank - 3) + [[pad, pad], [pad, pad], [0, 0]]
  return tf.pad(image, paddings)


def crop_flip_batch(images: tf.Tensor, offsets, flips, crop_size: int) -> tf.Tensor:
  """Per-image windows and mirrors of a batch in two gathers.

  Args:
    images: [batch, H, W, C] of any dtype.
    offsets: int32 [batch, 2] (y, x) corners.
    flips: bool [batch], or None for no mirroring.

  Returns:
    [batch, crop, crop, C]: image i's window at offsets[i], mirrored where flips[i].
  """
  steps = tf.range(crop_size, dtype=tf.int32)[tf.newaxis]
  offsets = tf.cast(offsets, tf.int32)
  rows = offsets[:, 0:1] + steps
  if flips is not None:
    steps = tf.where(tf.reshape(flips, [-1, 1]), crop_size - 1 - steps, steps)
  columns = offsets[:, 1:2] + steps
  x = tf.gather(images, rows, axis=1, batch_dims=1)
  return tf.gather(x, columns, axis=2, batch_dims=1)


def slice_windows(planes: tf.Tensor, plane_index, offsets, crop_size: int,
                  batch_size: Optional[int]) -> tf.Tensor:
  """Window i of plane plane_index[i]: one slice per image (see the module docstring).

  Args:
    planes: [P, H, W, C].
    plane_index: int32 [batch], which plane each window is cut from.
    offsets: int32 [batch, 2] (y, x) corners.
    batch_size: the static batch size, or None (then a map_fn over the batch).

  Returns:
    [batch, crop, crop, C].
  """
  offsets = tf.cast(offsets, tf.int32)
  begins = tf.stack([plane_index, offsets[:, 0], offsets[:, 1], tf.zeros_like(plane_index)],
                    axis=1)
  size = [1, crop_size, crop_size, planes.shape[-1]]
  if batch_size:
    return tf.concat([tf.slice(planes, begin, size)
                      for begin in tf.unstack(begins, num=batch_size)], axis=0)
  return tf.map_fn(lambda begin: tf.slice(planes, begin, size)[0], begins,
                   fn_output_signature=planes.dtype)


def add_per_channel(image: tf.Tensor, values) -> tf.Tensor:
  """image + values broadcast over the pixels, as a tiled-row add (module docstring).

  Args:
    image: [..., H, W, C].
    values: [C] for every image, or [batch, C] for image [batch, H, W, C].
  """
  values = tf.convert_to_tensor(values, dtype=image.dtype)
  shape = image.shape
  if shape[-3:].is_fully_defined():
    height, width, channels = shape[-3:]
    out_shape = [-1 if d is None else d for d in shape.as_list()]
  else:
    dynamic = tf.shape(image)
    height, width, channels = dynamic[-3], dynamic[-2], dynamic[-1]
    out_shape = dynamic
  rows = tf.reshape(image, [-1, height, width * channels])
  if values.shape.rank == 1:
    row = tf.tile(values, [width])  # [W * C], broadcast over the leading dimensions
  else:
    row = tf.reshape(tf.tile(values, [1, width]), [-1, 1, width * channels])
  return tf.reshape(rows + row, out_shape)


def subtract_mean(image: tf.Tensor, mean: Optional[np.ndarray]) -> tf.Tensor:
  """float32 [..., H, W, 3] minus None, a per-channel [3] or a per-pixel [H, W, 3] mean."""
  if mean is None:
    return image
  if np.ndim(mean) == 1:
    return add_per_channel(image, -np.asarray(mean, np.float32))
  return image - tf.constant(mean, tf.float32)  # [H, W, 3] over the batch: the outer dims


def lighting_matrix(eigenvalues: ArrayLike, eigenvectors: ArrayLike) -> np.ndarray:
  """float32 [3, 3]: the eigenvectors (columns) scaled by the standard deviations sqrt(l_i).

  The paper writes alpha_i * lambda_i, but the eigenvalues of the 0-255 pixels are variances
  (for ImageNet about 388, 1377, 14834), so the literal eigenvalue with alpha ~ N(0, 0.1)
  would shift pixels by ~1500. Krizhevsky's cuda-convnet scales by the standard deviation
  sqrt(lambda_i), which shifts a few levels (~12 along the first component); so do we.
  """
  values = np.maximum(np.asarray(eigenvalues, np.float64), 0.0)
  return (np.asarray(eigenvectors, np.float64) * np.sqrt(values)[np.newaxis]).astype(np.float32)


def lighting_offset(alpha, matrix: np.ndarray) -> tf.Tensor:
  """The PCA colour shift of paper 4.1: matrix @ alpha, float32 [..., 3] for alpha [..., 3].

  `matrix` is `lighting_matrix(...)`: the shift is sum_i p_i * alpha_i * sqrt(lambda_i).
  """
  return tf.linalg.matvec(tf.constant(matrix, tf.float32), tf.cast(alpha, tf.float32))
