"""The test-time input of paper section 4.1: the centre crop, or the ten crops.

One function for one image and for a batch, used by the evaluation pipeline and by the
serving receiver: float32, minus the mean, zero-padded by `pad`, then the centre crop_size
window, or the four corner and centre windows and their mirror images.
"""

from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import image_ops

# The paper's ten patches in the order `eval_crops(ten_crop=True)` returns them.
TEN_CROP_NAMES = ('centre', 'top_left', 'top_right', 'bottom_left', 'bottom_right',
                  'centre_flipped', 'top_left_flipped', 'top_right_flipped',
                  'bottom_left_flipped', 'bottom_right_flipped')


def five_crop_offsets(height, width, crop_size: int) -> List[Tuple[object, object]]:
  """(y, x) corners of the centre (rounded up and left) and the four corner windows."""
  bottom, right = height - crop_size, width - crop_size
  return [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]


def eval_crops(images: tf.Tensor, mean: Optional[np.ndarray], crop_size: int, pad: int = 0,
               ten_crop: bool = False) -> tf.Tensor:
  """uint8 [..., H, W, 3] stored images -> float32 [..., crop, crop, 3] (centre crop), or
  [..., 10, crop, crop, 3] in `TEN_CROP_NAMES` order.

  Args:
    images: one image [H, W, 3] or a batch [batch, H, W, 3], at least crop_size - 2 * pad
      on each side (checked where the dataset is opened).
    mean: None, per channel [3], or per pixel [H, W, 3] of the images' size.
    pad: zero padding (after the mean subtraction) around each image.
  """
  x = image_ops.subtract_mean(tf.cast(images, tf.float32), mean)
  height, width = image_ops.spatial_size(x)
  if ten_crop:
    x = image_ops.pad_image(x, pad)
    offsets = five_crop_offsets(height + 2 * pad, width + 2 * pad, crop_size)
    five = tf.stack([image_ops.crop(x, tf.stack(offset), crop_size) for offset in offsets],
                    axis=-4)
    return tf.concat([five, image_ops.flip_left_right(five)], axis=-4)
  top, left = five_crop_offsets(height + 2 * pad, width + 2 * pad, crop_size)[0]
  # In the unpadded image's coordinates: when the window lies inside the image (CIFAR-10:
  # the centre 32 of 32 + 2 * 4 is the image itself) the zeros are never read, and the pad
  # and slice would only add latency to every served request.
  top, left = top - pad, left - pad
  static = isinstance(height, int) and isinstance(width, int)
  if not static or min(top, left) < 0 or top + crop_size > height or left + crop_size > width:
    x, top, left = image_ops.pad_image(x, pad), top + pad, left + pad
  if not static:
    return image_ops.crop(x, tf.stack([top, left]), crop_size)
  if (top, left, crop_size, crop_size) == (0, 0, x.shape[-3], x.shape[-2]):
    return x
  return x[..., top:top + crop_size, left:left + crop_size, :]
