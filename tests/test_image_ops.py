"""The small image ops (alexnet_tf/image_ops.py) against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import image_ops

import references


@pytest.fixture
def rng():
  return np.random.default_rng(1234)


def test_window_offsets_are_uniform_and_inside():
  position = tf.random.stateless_uniform([4000, 2], seed=[1, 2])
  offsets = image_ops.window_offset(position, 20, 23, 16).numpy()
  for axis, positions in ((0, 5), (1, 8)):
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions  # every corner occurs, none outside
    assert counts.min() > 4000 / positions * 0.8 and counts.max() < 4000 / positions * 1.2
  edges = image_ops.window_offset(tf.constant([[0.0, 0.0], [0.999999, 0.9999999]]), 20, 23, 16)
  np.testing.assert_array_equal(edges, [[0, 0], [4, 7]])


@pytest.mark.parametrize('batch', [False, True])
@pytest.mark.parametrize('offset', [(0, 0), (4, 4), (0, 4), (3, 1)])
def test_crop_and_flip_equal_numpy(rng, offset, batch):
  image = rng.integers(0, 256, (2, 20, 20, 3) if batch else (20, 20, 3), dtype=np.uint8)
  y, x = offset
  got = image_ops.crop(tf.constant(image), offset, 16).numpy()
  np.testing.assert_array_equal(got, image[..., y:y + 16, x:x + 16, :])
  np.testing.assert_array_equal(image_ops.flip_left_right(tf.constant(image)),
                                image[..., :, ::-1, :])
  for flip in (False, True):
    mirrored = image_ops.mirror_if(tf.constant(image), tf.constant(flip)).numpy()
    np.testing.assert_array_equal(mirrored, image[..., :, ::-1, :] if flip else image)


def test_crop_of_an_image_of_unknown_size(rng):
  image = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
  dynamic = tf.function(lambda t: image_ops.crop(t, [2, 5], 9),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  np.testing.assert_array_equal(dynamic(tf.constant(image)), image[2:11, 5:14])


def test_crop_flip_batch_and_slice_windows_equal_numpy(rng):
  images = rng.integers(0, 256, (4, 12, 14, 3), dtype=np.uint8)
  offsets = np.array([[0, 0], [4, 6], [2, 3], [4, 0]], np.int32)
  flips = np.array([False, True, True, False])
  gathered = image_ops.crop_flip_batch(tf.constant(images), offsets, flips, 8).numpy()
  which = np.array([3, 0, 0, 2], np.int32)  # windows of other images than their own
  sliced = image_ops.slice_windows(tf.constant(images), which, offsets, 8, 4).numpy()
  mapped = tf.function(lambda o: image_ops.slice_windows(tf.constant(images), which, o, 8, None),
                       input_signature=[tf.TensorSpec([None, 2], tf.int32)])(offsets).numpy()
  for i, ((y, x), flip) in enumerate(zip(offsets, flips)):
    want = images[i, y:y + 8, x:x + 8]
    np.testing.assert_array_equal(gathered[i], want[:, ::-1] if flip else want)
    np.testing.assert_array_equal(sliced[i], images[which[i], y:y + 8, x:x + 8])
  np.testing.assert_array_equal(mapped, sliced)


def test_pad_image_pads_the_spatial_axes_with_zeros(rng):
  image = rng.random((2, 5, 7, 3)).astype(np.float32)
  np.testing.assert_array_equal(image_ops.pad_image(tf.constant(image), 2),
                                np.pad(image, [(0, 0), (2, 2), (2, 2), (0, 0)]))
  assert image_ops.pad_image(tf.constant(image), 0).shape == image.shape


@pytest.mark.parametrize('image_shape, values_shape', [
    ((5, 7, 3), (3,)), ((4, 5, 7, 3), (3,)), ((4, 5, 7, 3), (4, 3))])
def test_add_per_channel_equals_broadcast(rng, image_shape, values_shape):
  x = rng.random(image_shape).astype(np.float32)
  v = rng.random(values_shape).astype(np.float32)
  want = x + (v[:, None, None, :] if len(values_shape) == 2 else v)
  np.testing.assert_allclose(image_ops.add_per_channel(tf.constant(x), v), want, rtol=1e-6)


@pytest.mark.parametrize('kind', ['pixel', 'rgb', 'none'])
def test_subtract_mean(rng, kind):
  images = rng.integers(0, 256, (3, 6, 5, 3)).astype(np.float32)
  mean = {'pixel': rng.random((6, 5, 3)) * 255, 'rgb': np.array([120.0, 110.0, 100.0]),
          'none': None}[kind]
  want = images - references.full_mean(mean, images.shape[1:])
  got = image_ops.subtract_mean(tf.constant(images), mean)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_lighting_offset_equals_numpy(rng):
  eigenvalues = np.array([14834.0, 1377.0, 388.0])
  eigenvectors = np.linalg.qr(rng.normal(size=(3, 3)))[0]
  matrix = image_ops.lighting_matrix(eigenvalues, eigenvectors)
  alphas = np.array([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0], [-1.0, 0.5, 2.0]], np.float32)
  want = np.stack([references.lighting(a, eigenvalues, eigenvectors) for a in alphas])
  np.testing.assert_allclose(image_ops.lighting_offset(alphas, matrix), want, rtol=1e-5,
                             atol=1e-3)
  # sqrt(eigenvalue) scaling (Krizhevsky's code), not the eigenvalue: unit alpha along the
  # first eigenvector moves a pixel by exactly that component's standard deviation.
  one = image_ops.lighting_offset([1.0, 0.0, 0.0], matrix)
  np.testing.assert_allclose(np.linalg.norm(one), np.sqrt(eigenvalues[0]), rtol=1e-5)
