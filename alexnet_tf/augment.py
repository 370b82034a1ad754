"""The training augmentation of paper section 4.1, in the one form the input pipeline runs.

Every training image gets a random crop_size window of its stored image (zero-padded by
`pad` first, after the mean is subtracted: CIFAR-10's recipe), a mirror with p = 1/2 and a
PCA lighting shift alpha ~ N(0, std), with the mean subtracted (section 2: raw 0-255 values
minus the mean image). It runs in three steps:

  draw     the random choices of a block of images from one stateless seed
           (`Augmentation.draw`): positions, flips, alphas, a handful of ops per block
           instead of a dozen per image;
  cut      integers only, per image or per batch: the uint8 window, mirrored. From an
           encoded JPEG only the window is decoded (`decoding.decode_window`); a decoded
           image is sliced (`cut_image`); a batch of padded tiny images is cut by two
           gathers (`cut_batch`, where per-op overhead would dominate per image);
  finish   float, per batch, where the net runs (`finish`): float32, minus the mean cut at
           each window (and mirrored alike), plus the lighting shift. Its output has 4x the
           bytes of the uint8 crops, so tf.data threads hand over the crops instead.

Mirroring the uint8 crop and cutting the mean's window from a mirrored copy of the mean is
bit for bit the same as cropping both, subtracting and mirroring the difference; padding the
image and the mean with zeros and subtracting is bit for bit zero-padding the difference.
"""

import dataclasses
from typing import NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import decoding, image_ops
from alexnet_tf.config import DataConfig
from alexnet_tf.records import ColorStats


class Choices(NamedTuple):
  """The random choices of one image ([] dims) or of a block ([count] leading dims)."""
  position: tf.Tensor  # float32 [..., 2] on [0, 1): where the window lies (y, x)
  flip: Optional[tf.Tensor]  # bool [...]; None: random_flip is off
  alpha: Optional[tf.Tensor]  # float32 [..., 3]; None: lighting is off
  # With the stored size known ahead (`draw(stored_size=...)`), the window placed in it:
  offset: Optional[tf.Tensor] = None  # int32 [..., 2], the corner (y, x)
  jpeg_window: Optional[tf.Tensor] = None  # int32 [..., 4], `decoding.jpeg_crop_window`
  jpeg_begin: Optional[tf.Tensor] = None  # int32 [..., 3]


@dataclasses.dataclass(frozen=True, eq=False)
class Augmentation:
  """The augmentation of one dataset, with its mean and colour statistics folded in.

  Built by `create` from a DataConfig and a dataset already checked against it (the input
  pipeline's `open_dataset`): nothing here re-checks sizes.
  """
  crop_size: int
  pad: int
  random_flip: bool
  lighting_std: float
  # None; [3] per channel; or the per-pixel mean [H + 2 pad, W + 2 pad, 3] with a zero
  # border, stacked with its mirror image: [2, H + 2 pad, W + 2 pad, 3].
  mean: Optional[np.ndarray]
  lighting: Optional[np.ndarray]  # [3, 3] `image_ops.lighting_matrix`; None when off

  @classmethod
  def create(cls, data_config: DataConfig, mean: Optional[np.ndarray],
             color_stats: Optional[ColorStats],
             stored_size: Optional[Tuple[int, int]]) -> 'Augmentation':
    """mean: None, [3] or [H, W, 3] of the stored size; stored_size: (H, W) or None (then
    pad must be 0 and the mean per channel)."""
    pad = data_config.pad
    if mean is not None and (mean.ndim == 3 or pad):
      height, width = stored_size
      plane = np.broadcast_to(np.asarray(mean, np.float32), (height, width, 3))
      plane = np.pad(plane, [(pad, pad), (pad, pad), (0, 0)])
      mean = np.stack([plane, plane[:, ::-1]])
    elif mean is not None:
      mean = np.asarray(mean, np.float32)
    lighting = None
    if data_config.pca_lighting_std > 0:
      lighting = image_ops.lighting_matrix(color_stats.eigenvalues, color_stats.eigenvectors)
    return cls(data_config.crop_size, pad, data_config.random_flip,
               data_config.pca_lighting_std, mean, lighting)

  def draw(self, seed, count: int,
           stored_size: Optional[Tuple[int, int]] = None) -> Choices:
    """The choices of `count` images from the stateless seed (int [2]): [count] leading dims.

    With `stored_size` (pad == 0), the windows are also placed in images of that size, with
    the regions a JPEG decode of each needs: vectorised here, not a dozen ops per image.
    """
    uniform = tf.random.stateless_uniform([count, 3], seed=seed)
    flip = uniform[:, 2] < 0.5 if self.random_flip else None
    alpha = None
    if self.lighting is not None:
      alpha = tf.random.stateless_normal([count, 3], stddev=self.lighting_std,
                                         seed=tf.random.experimental.stateless_fold_in(seed, 1))
    choices = Choices(uniform[:, :2], flip, alpha)
    if stored_size is None:
      return choices
    height, width = stored_size
    offset = image_ops.window_offset(choices.position, height, width, self.crop_size)
    window, begin = decoding.jpeg_crop_window(offset, self.crop_size, width)
    return choices._replace(offset=offset, jpeg_window=window, jpeg_begin=begin)

  def decode_crop(self, encoded: tf.Tensor, choices: Choices) -> Tuple[tf.Tensor, tf.Tensor]:
    """Cut, pad == 0, from an encoded image: (uint8 [crop, crop, 3] mirrored, int32 [2]).

    Placed by `draw(stored_size=...)` when the choices carry an offset, else within the
    image's own size.
    """
    if choices.offset is None:
      crop, offset = decoding.decode_window(encoded, choices.position, self.crop_size)
    else:
      offset = choices.offset
      crop = decoding.decode_planned_window(encoded, offset, choices.jpeg_window,
                                            choices.jpeg_begin, self.crop_size)
    return image_ops.mirror_if(crop, choices.flip), offset

  def cut_image(self, image: tf.Tensor, choices: Choices) -> Tuple[tf.Tensor, tf.Tensor]:
    """Cut, pad == 0, from a decoded uint8 [H, W, 3]: (uint8 [crop, crop, 3], int32 [2])."""
    offset = choices.offset
    if offset is None:
      offset = image_ops.window_offset(choices.position, *image_ops.spatial_size(image),
                                       self.crop_size)
    crop = image_ops.crop(image, offset, self.crop_size)
    return image_ops.mirror_if(crop, choices.flip), offset

  def cut_batch(self, images: tf.Tensor, choices: Choices) -> Tuple[tf.Tensor, tf.Tensor]:
    """Cut a batch of equally sized uint8 [batch, H, W, 3], padded by `pad` first.

    Returns:
      (uint8 [batch, crop, crop, 3] mirrored, int32 [batch, 2] corners in the padded image).
    """
    images = image_ops.pad_image(images, self.pad)
    height, width = images.shape[1], images.shape[2]
    offsets = image_ops.window_offset(choices.position, height, width, self.crop_size)
    return image_ops.crop_flip_batch(images, offsets, choices.flip, self.crop_size), offsets

  def finish(self, crops: tf.Tensor, offsets: tf.Tensor, flips: Optional[tf.Tensor],
             alphas: Optional[tf.Tensor]) -> tf.Tensor:
    """The float step of a batch of cut crops.

    Args:
      crops: uint8 [batch, crop, crop, 3], already mirrored where flips.
      offsets: int32 [batch, 2], the windows' corners in the (padded) stored image.
      flips: bool [batch] or None; alphas: float32 [batch, 3] or None (as drawn).

    Returns:
      float32 [batch, crop, crop, 3]: for each image exactly what cutting the window of the
      image and of the mean, subtracting, mirroring and adding the lighting shift gives (up
      to float rounding of the shift).
    """
    x = tf.cast(crops, tf.float32)
    if self.mean is not None and self.mean.ndim == 4:
      x = x - self._mean_windows(offsets, flips, crops.shape[0])
    elif self.mean is not None:
      x = image_ops.add_per_channel(x, -self.mean)
    if self.lighting is None:
      return x
    return image_ops.add_per_channel(x, image_ops.lighting_offset(alphas, self.lighting))

  def _mean_windows(self, offsets, flips, batch_size: Optional[int]) -> tf.Tensor:
    """float32 [batch, crop, crop, 3]: the mean cut at each window, mirrored like the image."""
    offsets = tf.cast(offsets, tf.int32)
    if flips is None:
      plane = tf.zeros_like(offsets[:, 0])
    else:
      plane = tf.cast(flips, tf.int32)
      # The mirrored window [x, x + c) of the mean is columns [W - x - c, W - x) of its mirror.
      columns = self.mean.shape[2] - offsets[:, 1] - self.crop_size
      offsets = tf.stack([offsets[:, 0], tf.where(flips, columns, offsets[:, 1])], axis=1)
    return image_ops.slice_windows(tf.constant(self.mean), plane, offsets, self.crop_size,
                                   batch_size)
