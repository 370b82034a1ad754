"""Decoding (alexnet_tf/decoding.py): one window of a JPEG has exactly a full decode's pixels."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import decoding

import references

CROP = 16


@pytest.fixture
def rng():
  return np.random.default_rng(99)


# 45x47 with Pillow's 4:2:0 chroma, where a plain decode_and_crop_jpeg differs from the full
# decode on window edges at 16-pixel boundaries: every column, the last row and column.
HEIGHT, WIDTH = 45, 47
OFFSETS = [(0, x) for x in range(WIDTH - CROP + 1)] + [(HEIGHT - CROP, 5), (29, 31), (8, 16)]


def _photo(rng, fmt):
  pixels = (rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
  encoded = tf.constant(references.encode(pixels, fmt))
  return encoded, tf.io.decode_image(encoded, channels=3).numpy()


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_decode_window_equals_full_decode_then_slice(rng, fmt):
  encoded, full = _photo(rng, fmt)
  decode = tf.function(lambda p: decoding.decode_window(encoded, p, CROP))
  for y, x in OFFSETS:  # the centre of each corner's interval of positions
    position = ((y + 0.5) / (HEIGHT - CROP + 1), (x + 0.5) / (WIDTH - CROP + 1))
    crop, offset = decode(tf.constant(position, tf.float32))
    np.testing.assert_array_equal(offset, [y, x])
    np.testing.assert_array_equal(crop, full[y:y + CROP, x:x + CROP], err_msg=f'at {(y, x)}')


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_planned_window_equals_full_decode_then_slice(rng, fmt):
  encoded, full = _photo(rng, fmt)
  offsets = tf.constant(OFFSETS, tf.int32)
  windows, begins = decoding.jpeg_crop_window(offsets, CROP, WIDTH)  # a block, as planned
  decode = tf.function(lambda o, w, b: decoding.decode_planned_window(encoded, o, w, b, CROP))
  for i, (y, x) in enumerate(OFFSETS):
    np.testing.assert_array_equal(decode(offsets[i], windows[i], begins[i]),
                                  full[y:y + CROP, x:x + CROP], err_msg=f'at {(y, x)}')


def test_jpeg_crop_window_adds_a_column_each_side_where_there_is_one():
  offsets = tf.constant([[0, 0], [3, 1], [5, 31], [2, 20]], tf.int32)
  window, begin = decoding.jpeg_crop_window(offsets, CROP, 47)
  np.testing.assert_array_equal(window, [[0, 0, CROP, CROP + 1], [3, 0, CROP, CROP + 2],
                                         [5, 30, CROP, CROP + 1], [2, 19, CROP, CROP + 2]])
  np.testing.assert_array_equal(begin[:, 1], [0, 1, 1, 1])


def test_an_image_smaller_than_the_crop_fails_at_run_time():
  encoded = tf.constant(references.encode(np.zeros((12, 30, 3), np.uint8), 'JPEG'))
  with pytest.raises(tf.errors.InvalidArgumentError, match='smaller than the 16x16 crop'):
    decoding.decode_window(encoded, tf.constant([0.5, 0.5]), CROP)


def test_resize_to_stored(rng):
  size = 20
  stored = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
  # Already the stored size: untouched, so serving equals the TFRecord eval path.
  np.testing.assert_array_equal(decoding.resize_to_stored(stored, size), stored)
  # Otherwise like the converter: Pillow's bicubic resampling of the central square.
  smooth = np.kron(rng.integers(0, 256, (7, 9, 3)), np.ones((9, 9, 1))).astype(np.uint8)
  photo = np.asarray(Image.fromarray(smooth).resize((90, 63), Image.BICUBIC))
  left = (90 - 63) / 2
  want = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC,
                                                  box=(left, 0, left + 63, 63)), np.int32)
  got = decoding.resize_to_stored(photo, size).numpy().astype(np.int32)
  assert got.shape == (size, size, 3)
  # Pillow resamples in fixed point: a few levels at most, under one on average.
  assert np.abs(got - want).max() <= 4 and np.abs(got - want).mean() < 1
  decoded = decoding.decode_for_serving(tf.constant(references.encode(photo, 'PNG')), size)
  np.testing.assert_array_equal(decoded, got)


def _png_claiming(height, width, pixels):
  """A real PNG of `pixels` whose IHDR says height x width: a decompression bomb's header."""
  data = bytearray(references.encode(pixels, 'PNG'))
  data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
  return bytes(data)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_header_size_reads_jpeg_and_png_without_decoding(rng, fmt):
  pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  size = decoding.header_size(tf.constant(references.encode(pixels, fmt)))
  np.testing.assert_array_equal(size, [37, 53])


@pytest.mark.parametrize('fmt', ['GIF', 'BMP'])
def test_serving_decodes_only_jpeg_and_png(rng, fmt):
  encoded = tf.constant(references.encode(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), fmt))
  with pytest.raises(tf.errors.InvalidArgumentError, match='not a JPEG or PNG file'):
    decoding.decode_for_serving(encoded, 8)


def test_images_over_the_pixel_limit_are_refused_from_their_header(rng):
  pixels = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
  encoded = tf.constant(references.encode(pixels, 'PNG'))
  np.testing.assert_array_equal(decoding.decode_limited(encoded, 10_000), pixels)
  with pytest.raises(tf.errors.InvalidArgumentError, match='more than 9999 pixels'):
    decoding.decode_limited(encoded, 9_999)
  # A 20000x20000 header on a small file: refused before the decoder allocates anything.
  bomb = tf.constant(_png_claiming(20000, 20000, pixels))
  with pytest.raises(tf.errors.InvalidArgumentError, match='the serving limit'):
    decoding.decode_for_serving(bomb, 32)
