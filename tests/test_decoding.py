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


@pytest.mark.parametrize('known_size', [True, False])
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_decode_window_equals_full_decode_then_slice(rng, fmt, known_size):
  # 45x47 with Pillow's 4:2:0 chroma, where a plain decode_and_crop_jpeg differs from the full
  # decode on window edges at 16-pixel boundaries: every column, the last row and column.
  height, width = 45, 47
  pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
  encoded = tf.constant(references.encode(pixels, fmt))
  full = tf.io.decode_image(encoded, channels=3).numpy()
  stored = (height, width) if known_size else None
  decode = tf.function(lambda p: decoding.decode_window(encoded, p, CROP, stored))
  positions = [((0.0, (x + 0.5) / (width - CROP + 1))) for x in range(width - CROP + 1)]
  positions += [(0.999, 0.2), (0.6, 0.999), (0.3, 0.5)]
  for position in positions:
    crop, offset = decode(tf.constant(position, tf.float32))
    y, x = offset.numpy()
    assert 0 <= y <= height - CROP and 0 <= x <= width - CROP
    np.testing.assert_array_equal(crop, full[y:y + CROP, x:x + CROP],
                                  err_msg=f'window at {(y, x)}')
  # The corner follows the position as `image_ops.window_offset` maps it.
  _, offset = decode(tf.constant([0.0, 0.999], tf.float32))
  np.testing.assert_array_equal(offset, [0, width - CROP])


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
