"""Plain NumPy versions of the preprocessing, one image at a time: what the product's batched,
deferred and fused TensorFlow paths are checked against."""

import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str) -> bytes:
  """uint8 [H, W, 3] -> a JPEG (quality 90, Pillow's 4:2:0 chroma) or PNG file."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
  return buffer.getvalue()


def lighting(alpha, eigenvalues, eigenvectors) -> np.ndarray:
  """The PCA shift sum_i p_i alpha_i sqrt(lambda_i) (Krizhevsky's sqrt scaling): [3]."""
  vectors = np.asarray(eigenvectors, np.float64)
  return vectors @ (np.asarray(alpha, np.float64) * np.sqrt(eigenvalues))


def full_mean(mean: Optional[np.ndarray], shape) -> np.ndarray:
  """None, [3] or [H, W, 3] as an [H, W, 3] array."""
  if mean is None:
    return np.zeros(shape, np.float32)
  return np.broadcast_to(np.asarray(mean, np.float32), shape)


def train_image(image: np.ndarray, mean: Optional[np.ndarray], offset: Sequence[int],
                flip: bool, shift, crop_size: int, pad: int = 0) -> np.ndarray:
  """The paper's training augmentation of one stored image for given choices: minus the mean,
  zero padding, the crop at `offset` of the padded image, the mirror, the lighting shift."""
  x = image.astype(np.float32) - full_mean(mean, image.shape)
  x = np.pad(x, [(pad, pad), (pad, pad), (0, 0)])
  y0, x0 = offset
  x = x[y0:y0 + crop_size, x0:x0 + crop_size]
  if flip:
    x = x[:, ::-1]
  return x + np.asarray(shift, np.float32)


def eval_image(image: np.ndarray, mean: Optional[np.ndarray], crop_size: int, pad: int = 0,
               ten_crop: bool = False) -> np.ndarray:
  """The test input of one image: [crop, crop, 3], or the paper's ten crops [10, crop, crop,
  3] (centre, top-left, top-right, bottom-left, bottom-right, then their mirrors)."""
  x = image.astype(np.float32) - full_mean(mean, image.shape)
  x = np.pad(x, [(pad, pad), (pad, pad), (0, 0)])
  bottom, right = x.shape[0] - crop_size, x.shape[1] - crop_size
  corners = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
  five = [x[y:y + crop_size, c:c + crop_size] for y, c in corners]
  if not ten_crop:
    return five[0]
  return np.stack(five + [w[:, ::-1] for w in five])
