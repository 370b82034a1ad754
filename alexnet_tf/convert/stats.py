"""Training-set pixel moments, summed per shard and merged: colour PCA and the mean image.

The sums are exact integers (int64). The moments of a batch of images are computed in
float64, which is exact as long as a batch's sums stay below 2**53 (BATCH_PIXELS makes
sure), and then added as integers. So the
result does not depend on the order of shards or on how the work was split between
processes, and a resumed conversion writes the very same dataset.json as an uninterrupted one.
int64 overflows only after ~1e14 pixels (1.6 billion images of 256x256).
"""

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np

from alexnet_tf import records

# Pixels per float64 batch: sums of products stay below 2**20 * 255**2 < 2**53, so they are
# exact, and the float64 copy stays at 24 MB. A single larger image is still summed alone.
BATCH_PIXELS = 1 << 20


@dataclasses.dataclass(eq=False)
class PixelMoments:
  """Sums over images of uint8 RGB pixels on the 0-255 scale.

  Attributes:
    num_images: images added.
    num_pixels: pixels added (height * width per image).
    pixel_sum: int64 [3], the sum of the pixels' RGB values.
    outer_sum: int64 [3, 3], the sum of p p^T over pixels p.
    image_sum: int64 [height, width, 3], the sum of the images while they all share one
      size; None if there are none yet or once two sizes were seen (`uniform` is then False).
    uniform: whether every image added so far has the same size.
  """
  num_images: int = 0
  num_pixels: int = 0
  pixel_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, np.int64))
  outer_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 3), np.int64))
  image_sum: Optional[np.ndarray] = None
  uniform: bool = True

  def add(self, pixels: np.ndarray) -> None:
    """Adds one uint8 image [height, width, 3]."""
    self.add_batch(pixels[np.newaxis])

  def add_images(self, images: Sequence[np.ndarray]) -> None:
    """Adds uint8 images [height, width, 3], stacking those of one size (fewer NumPy calls)."""
    batch, batch_pixels = [], 0
    for pixels in images:
      size = pixels.shape[0] * pixels.shape[1]
      if batch and (pixels.shape != batch[0].shape or batch_pixels + size > BATCH_PIXELS):
        self.add_batch(np.stack(batch))
        batch, batch_pixels = [], 0
      batch.append(pixels)
      batch_pixels += size
    if batch:
      self.add_batch(np.stack(batch))

  def add_batch(self, batch: np.ndarray) -> None:
    """Adds uint8 images of one size [n, height, width, 3]."""
    flat = batch.reshape(-1, 3).astype(np.float64)
    self.pixel_sum += flat.sum(axis=0).astype(np.int64)
    self.outer_sum += (flat.T @ flat).astype(np.int64)
    self.num_pixels += flat.shape[0]
    self.num_images += batch.shape[0]
    if not self.uniform:
      return
    if self.image_sum is None:
      self.image_sum = batch.sum(axis=0, dtype=np.int64)
    elif self.image_sum.shape == batch.shape[1:]:
      self.image_sum += batch.sum(axis=0, dtype=np.int64)
    else:
      self.uniform, self.image_sum = False, None

  def merge(self, other: 'PixelMoments') -> None:
    """Adds the sums of `other` to these."""
    if other.num_images == 0:
      return
    self.pixel_sum += other.pixel_sum
    self.outer_sum += other.outer_sum
    self.num_pixels += other.num_pixels
    was_empty = self.num_images == 0
    self.num_images += other.num_images
    if was_empty:
      self.uniform = other.uniform
      self.image_sum = None if other.image_sum is None else other.image_sum.copy()
    elif (self.uniform and other.uniform and
          self.image_sum.shape == other.image_sum.shape):
      self.image_sum += other.image_sum
    else:
      self.uniform, self.image_sum = False, None

  def color_stats(self) -> Optional[records.ColorStats]:
    """Mean and PCA of the RGB values, or None if no pixels were added."""
    if self.num_pixels == 0:
      return None
    return records.ColorStats.from_moments(self.pixel_sum.astype(np.float64),
                                           self.outer_sum.astype(np.float64), self.num_pixels)

  def mean_image(self) -> Optional[np.ndarray]:
    """The per-pixel mean, float32 [height, width, 3] on 0-255, if all images share a size."""
    if self.image_sum is None:
      return None
    return (self.image_sum / self.num_images).astype(np.float32)

  def to_arrays(self, prefix: str) -> Dict[str, np.ndarray]:
    """The sums as named arrays, to store in an .npz file; `from_arrays` reads them back."""
    arrays = {
        prefix + 'counts': np.array([self.num_images, self.num_pixels, self.uniform], np.int64),
        prefix + 'pixel_sum': self.pixel_sum,
        prefix + 'outer_sum': self.outer_sum,
    }
    if self.image_sum is not None:
      arrays[prefix + 'image_sum'] = self.image_sum
    return arrays

  @classmethod
  def from_arrays(cls, arrays, prefix: str) -> 'PixelMoments':
    num_images, num_pixels, uniform = (int(v) for v in arrays[prefix + 'counts'])
    image_sum = arrays[prefix + 'image_sum'] if prefix + 'image_sum' in arrays else None
    return cls(num_images=num_images, num_pixels=num_pixels,
               pixel_sum=np.array(arrays[prefix + 'pixel_sum'], np.int64),
               outer_sum=np.array(arrays[prefix + 'outer_sum'], np.int64),
               image_sum=None if image_sum is None else np.array(image_sum, np.int64),
               uniform=bool(uniform))
