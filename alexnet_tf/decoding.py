"""Encoded images -> uint8 RGB pixels: whole, one crop window, or brought to the stored size.

Stored images are JPEG (the converter's default) or PNG (CIFAR-10's lossless option); the
format is a property of each example, so it is looked at per image (`tf.io.is_jpeg`, a few
microseconds).
"""

from typing import Tuple

import tensorflow as tf

from alexnet_tf import image_ops


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """A JPEG, PNG, GIF or BMP file (string []) -> uint8 RGB [H, W, 3]."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def jpeg_crop_window(offset, crop_size: int, width) -> Tuple[tf.Tensor, tf.Tensor]:
  """Where `tf.io.decode_and_crop_jpeg` must decode a crop to get a full decode's pixels.

  With subsampled chroma (4:2:0, the JPEG default) libjpeg upsamples a partial decode as if
  the image ended at the decoded region, so window columns on a 16-pixel boundary would
  differ from a full decode by up to ~30 levels. Decoding one more column on each side
  (where the image has one) gives every window column its real neighbours.

  Args:
    offset: int32 [..., 2], the (y, x) corners of crop_size windows.
    width: the image width, an int or an int32 tensor broadcastable to [...].

  Returns:
    (int32 [..., 4]: the crop_window (y, x, height, width) to decode, int32 [..., 3]: the
    begin (0, left, 0) of the crop in the decoded region, for `tf.slice`).
  """
  offset = tf.cast(offset, tf.int32)
  y, x = offset[..., 0], offset[..., 1]
  left = tf.minimum(x, 1)
  right = tf.minimum(width - x - crop_size, 1)
  window = tf.stack([y, x - left, tf.fill(tf.shape(y), crop_size),
                     crop_size + left + right], axis=-1)
  zeros = tf.zeros_like(left)
  return window, tf.stack([zeros, left, zeros], axis=-1)


def decode_window(encoded: tf.Tensor, position, crop_size: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """The crop_size window at a uniform `position` of an encoded image of any size.

  The window is placed within the image's own size (JPEG: read from its header), which must
  hold the crop (InvalidArgumentError at run time if not). JPEGs decode only the window.

  Args:
    encoded: string [], a JPEG or PNG file.
    position: float32 [2] on [0, 1): where the window lies (`image_ops.window_offset`).

  Returns:
    (uint8 [crop, crop, 3], int32 [2]: the window's corner (y, x) in the stored image).
  """
  def offset_for(height, width):
    check = tf.debugging.assert_greater_equal(
        tf.minimum(height, width), crop_size,
        message=f'a stored image is smaller than the {crop_size}x{crop_size} crop')
    with tf.control_dependencies([check]):
      return image_ops.window_offset(position, height, width, crop_size)

  def from_jpeg():
    height, width = tf.unstack(tf.io.extract_jpeg_shape(encoded)[:2])
    offset = offset_for(height, width)
    return _decode_jpeg_window(encoded, *jpeg_crop_window(offset, crop_size, width),
                               crop_size), offset

  def from_other():
    image = decode_stored(encoded)
    offset = offset_for(*image_ops.spatial_size(image))
    return image_ops.crop(image, offset, crop_size), offset

  image, offset = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
  image.set_shape([crop_size, crop_size, 3])
  return image, offset


def decode_planned_window(encoded: tf.Tensor, offset, jpeg_window, jpeg_begin,
                          crop_size: int) -> tf.Tensor:
  """The crop_size window at `offset` of an encoded image whose size was known beforehand.

  Args:
    offset: int32 [2], the window's corner (y, x); jpeg_window int32 [4] and jpeg_begin int32
      [3]: `jpeg_crop_window(offset, crop_size, width)`, computed ahead for a block of images
      of one size (a dozen small ops fewer per image than `decode_window`).

  Returns:
    uint8 [crop, crop, 3], pixel for pixel the window of a full decode.
  """
  image = tf.cond(tf.io.is_jpeg(encoded),
                  lambda: _decode_jpeg_window(encoded, jpeg_window, jpeg_begin, crop_size),
                  lambda: image_ops.crop(decode_stored(encoded), offset, crop_size))
  image.set_shape([crop_size, crop_size, 3])
  return image


def _decode_jpeg_window(encoded, window, begin, crop_size: int) -> tf.Tensor:
  wider = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
  return tf.slice(wider, begin, [crop_size, crop_size, 3])


def resize_to_stored(image: tf.Tensor, size: int) -> tf.Tensor:
  """An arbitrary uint8 image [H, W, 3] brought to the stored size: uint8 [size, size, 3].

  Like the converter (`convert.images.resize_center_crop`, paper section 2): the central
  min(H, W) square, rescaled to size x size with an antialiased bicubic filter (Keys, a=-0.5,
  as Pillow's BICUBIC), by one resampling of the source. An image already size x size is
  returned unchanged, so a JPEG of the stored size gets exactly the ops of the TFRecord eval
  path. Other sizes agree with the converter's Pillow output within a few levels (Pillow
  resamples in fixed point).
  """
  image = tf.convert_to_tensor(image)
  shape = tf.shape(image)

  def resample():  # its ops run only for images not already size x size
    height, width = shape[0], shape[1]
    side = tf.cast(tf.minimum(height, width), tf.float32)
    scale = size / side
    # ScaleAndTranslate samples input position (x + 0.5 - t) / scale for output pixel x;
    # t = -left * scale puts the (possibly half-pixel) left edge of the square at 0.
    left = (tf.cast(width, tf.float32) - side) / 2.0
    top = (tf.cast(height, tf.float32) - side) / 2.0
    resized = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(image, tf.float32)[tf.newaxis], size=[size, size],
        scale=tf.stack([scale, scale]), translation=tf.stack([-top * scale, -left * scale]),
        kernel_type='keyscubic', antialias=True)[0]
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

  same = tf.reduce_all(tf.equal(shape[:2], size))  # four small ops on every served request
  result = tf.cond(same, lambda: tf.identity(image), resample)
  result.set_shape([size, size, 3])
  return result


# Serving decodes only images up to this many pixels (a 6000x4000 camera photo is 24 M): the
# decoded uint8 image and its float resampling cost ~15 bytes per pixel, so one request of
# the maximum stays under ~400 MB, where a 1 MB PNG of 20000x20000 would take 6 GB.
MAX_SERVING_PIXELS = 25_000_000
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def header_size(encoded: tf.Tensor) -> tf.Tensor:
  """int64 [2] (height, width) of a JPEG or PNG read from its header, without decoding.

  InvalidArgumentError for any other format (serving takes JPEG and PNG, what the converter
  stores) or a JPEG whose header cannot be read.
  """
  def from_png():  # IHDR, right after the signature: width, then height, 4 bytes big-endian
    fields = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8)
    fields = tf.reshape(tf.cast(fields, tf.int64), [2, 4])
    width_height = tf.reduce_sum(fields * tf.constant([2 ** 24, 2 ** 16, 2 ** 8, 1], tf.int64),
                                 axis=1)
    return tf.reverse(width_height, [0])

  def from_other():
    check = tf.debugging.Assert(
        tf.logical_and(tf.equal(tf.strings.substr(encoded, 0, 8), _PNG_SIGNATURE),
                       tf.strings.length(encoded) >= 24),
        ['not a JPEG or PNG file (serving decodes those two formats)'])
    with tf.control_dependencies([check]):
      return from_png()

  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64), from_other)


def decode_limited(encoded: tf.Tensor, max_pixels: int = MAX_SERVING_PIXELS,
                   limit: str = 'the serving limit') -> tf.Tensor:
  """A JPEG or PNG file -> uint8 [H, W, 3]; refused (InvalidArgumentError) from its header,
  before anything is decoded, when it has more than `max_pixels` pixels (`limit` names them
  in the message)."""
  fits = tf.debugging.assert_less_equal(
      tf.reduce_prod(header_size(encoded)), tf.constant(max_pixels, tf.int64),
      message=f'the image has more than {max_pixels} pixels, {limit}')
  with tf.control_dependencies([fits]):
    return decode_image(encoded)


# Training and evaluation decode a stored image whole only up to this many pixels: the most
# the converter stores (its --max-pixels can be raised from 25 M up to this), so a damaged or
# foreign shard costs at most ~300 MB (RGB) per decode. JPEG training crops decode the window.
MAX_STORED_PIXELS = 100_000_000


def decode_stored(encoded: tf.Tensor) -> tf.Tensor:
  """A stored JPEG or PNG (string []) -> uint8 RGB [H, W, 3], refused (InvalidArgumentError)
  from its header over MAX_STORED_PIXELS."""
  return decode_limited(encoded, MAX_STORED_PIXELS, 'the limit of stored images')


def decode_for_serving(encoded: tf.Tensor, size: int,
                       max_pixels: int = MAX_SERVING_PIXELS) -> tf.Tensor:
  """A JPEG or PNG file -> uint8 [size, size, 3], as the converter would store it
  (`decode_limited`, then `resize_to_stored`)."""
  return resize_to_stored(decode_limited(encoded, max_pixels), size)
