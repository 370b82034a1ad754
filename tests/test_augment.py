"""The training augmentation (alexnet_tf/augment.py): draw, cut and finish against the NumPy
reference of one image (tests/references.py)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import records
from alexnet_tf.augment import Augmentation, Choices
from alexnet_tf.config import DataConfig

import references

SIZE = 20
CROP = 16
DATA = DataConfig(crop_size=CROP)


@pytest.fixture(scope='module')
def stats():
  rng = np.random.default_rng(3)
  pixels = rng.random((500, 3)) @ np.array([[60., 10, 0], [20, 50, 5], [0, 30, 40]]) + 50
  return records.ColorStats.from_moments(pixels.sum(0), pixels.T @ pixels, len(pixels))


def _mean(kind, size=(SIZE, SIZE)):
  rng = np.random.default_rng(4)
  return {'pixel': (rng.random((*size, 3)) * 255).astype(np.float32),
          'rgb': np.array([125.0, 120.0, 110.0], np.float32), 'none': None}[kind]


def _images(count, size=(SIZE, SIZE), seed=5):
  return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def _reference(aug, images, offsets, choices, mean, stats, pad=0):
  """references.train_image of every image for the choices that `aug` drew."""
  flips = np.zeros(len(images), bool) if choices.flip is None else choices.flip.numpy()
  alphas = None if choices.alpha is None else choices.alpha.numpy()
  return [references.train_image(
      image, mean, offset, flip,
      0.0 if alphas is None else references.lighting(alpha, stats.eigenvalues,
                                                     stats.eigenvectors), aug.crop_size, pad)
          for image, offset, flip, alpha in zip(images, offsets, flips,
                                                 alphas if alphas is not None else flips)]


def test_draws_are_uniform_and_a_function_of_the_seed(stats):
  aug = Augmentation.create(DATA, None, stats, None)
  choices = aug.draw(tf.constant([7, 0], tf.int64), 4000)
  position = choices.position.numpy()
  assert position.shape == (4000, 2) and position.min() >= 0 and position.max() < 1
  assert 0.45 < choices.flip.numpy().mean() < 0.55
  np.testing.assert_allclose(choices.alpha.numpy().std(0), DATA.pca_lighting_std, rtol=0.1)
  again = aug.draw(tf.constant([7, 0], tf.int64), 4000)
  other = aug.draw(tf.constant([7, 1], tf.int64), 4000)
  for x, y in zip(choices, again):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(position, other.position.numpy())


@pytest.mark.parametrize('changes, has_flip, has_alpha', [
    (dict(random_flip=False), False, True), (dict(pca_lighting_std=0.0), True, False)])
def test_disabled_augmentations_draw_nothing(stats, changes, has_flip, has_alpha):
  aug = Augmentation.create(dataclasses.replace(DATA, **changes), None, stats, None)
  choices = aug.draw(tf.constant([1, 2], tf.int64), 8)
  assert (choices.flip is not None) == has_flip and (choices.alpha is not None) == has_alpha


@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb', 'none'])
@pytest.mark.parametrize('random_flip, lighting', [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize('source', ['JPEG', 'PNG', 'decoded'])
@pytest.mark.parametrize('placed_ahead', [True, False])
def test_per_image_cut_and_batch_finish_equal_numpy(stats, mean_kind, random_flip, lighting,
                                                    source, placed_ahead):
  data = dataclasses.replace(DATA, random_flip=random_flip,
                             pca_lighting_std=0.1 if lighting else 0.0)
  mean = _mean(mean_kind)
  aug = Augmentation.create(data, mean, stats, (SIZE, SIZE))
  images = _images(6)
  if source != 'decoded':  # the reference sees what the decoder gives
    encoded = [tf.constant(references.encode(image, source)) for image in images]
    images = np.stack([tf.io.decode_image(e, channels=3).numpy() for e in encoded])
  # Windows placed in the known stored size for the whole block, or by each image's own size.
  choices = aug.draw(tf.constant([3, 9], tf.int64), 6, (SIZE, SIZE) if placed_ahead else None)
  cuts = []
  for i in range(6):
    one = Choices(*[None if c is None else c[i] for c in choices])
    cuts.append(aug.cut_image(tf.constant(images[i]), one) if source == 'decoded' else
                aug.decode_crop(encoded[i], one))
  crops, offsets = tf.stack([c for c, _ in cuts]), tf.stack([o for _, o in cuts])
  assert crops.dtype == tf.uint8
  got = aug.finish(crops, offsets, choices.flip, choices.alpha).numpy()
  want = _reference(aug, images, offsets.numpy(), choices, mean, stats)
  for i in range(6):
    np.testing.assert_allclose(got[i], want[i], rtol=1e-5, atol=1e-3, err_msg=f'image {i}')
  if random_flip:
    assert choices.flip.numpy().any() and not choices.flip.numpy().all()
  if placed_ahead:
    np.testing.assert_array_equal(offsets, choices.offset)


def test_placing_ahead_puts_windows_where_each_image_would():
  aug = Augmentation.create(dataclasses.replace(DATA, pca_lighting_std=0.0), None, None,
                            (SIZE, SIZE + 3))
  seed = tf.constant([4, 4], tf.int64)
  ahead, free = aug.draw(seed, 64, (SIZE, SIZE + 3)), aug.draw(seed, 64)
  np.testing.assert_array_equal(ahead.position, free.position)
  image = tf.zeros([SIZE, SIZE + 3, 3], tf.uint8)
  for i in range(64):
    _, offset = aug.cut_image(image, Choices(free.position[i], free.flip[i], None))
    np.testing.assert_array_equal(offset, ahead.offset[i])


@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb', 'none'])
@pytest.mark.parametrize('pad, crop_size', [(2, SIZE), (3, 22), (4, 16)])
def test_padded_batch_cut_and_finish_equal_numpy(stats, mean_kind, pad, crop_size):
  data = dataclasses.replace(DATA, crop_size=crop_size, pad=pad)
  mean = _mean(mean_kind)
  aug = Augmentation.create(data, mean, stats, (SIZE, SIZE))
  images = _images(8)
  choices = aug.draw(tf.constant([5, 1], tf.int64), 8)
  crops, offsets = aug.cut_batch(tf.constant(images), choices)
  got = aug.finish(crops, offsets, choices.flip, choices.alpha).numpy()
  want = _reference(aug, images, offsets.numpy(), choices, mean, stats, pad)
  assert offsets.numpy().max() <= SIZE + 2 * pad - crop_size
  for i in range(8):
    np.testing.assert_allclose(got[i], want[i], rtol=1e-5, atol=1e-3, err_msg=f'image {i}')


def test_padding_is_zero_after_mean_subtraction():
  # The corner window of a 4-padded image is half padding: exactly the mean, 0, there.
  data = dataclasses.replace(DATA, crop_size=SIZE, pad=4, random_flip=False,
                             pca_lighting_std=0.0)
  mean = _mean('pixel')
  aug = Augmentation.create(data, mean, None, (SIZE, SIZE))
  image = _images(1)
  corner = Choices(tf.zeros([1, 2]), None, None)
  crops, offsets = aug.cut_batch(tf.constant(image), corner)
  got = aug.finish(crops, offsets, None, None).numpy()[0]
  assert np.all(got[:4] == 0) and np.all(got[:, :4] == 0)
  np.testing.assert_allclose(got[4:, 4:], image[0, :-4, :-4] - mean[:-4, :-4], atol=1e-4)


def test_finish_without_a_static_batch_size_and_in_graph_mode(stats):
  mean = _mean('pixel')
  aug = Augmentation.create(DATA, mean, stats, (SIZE, SIZE))
  images = _images(5)
  choices = aug.draw(tf.constant([2, 2], tf.int64), 5)
  crops, offsets = aug.cut_batch(tf.constant(images), choices)
  eager = aug.finish(crops, offsets, choices.flip, choices.alpha).numpy()
  spec = [tf.TensorSpec([None, CROP, CROP, 3], tf.uint8), tf.TensorSpec([None, 2], tf.int32),
          tf.TensorSpec([None], tf.bool), tf.TensorSpec([None, 3], tf.float32)]
  unknown_batch = tf.function(aug.finish, input_signature=spec)
  np.testing.assert_array_equal(
      unknown_batch(crops, offsets, choices.flip, choices.alpha), eager)
  with tf.Graph().as_default():
    graph_choices = aug.draw(tf.constant([2, 2], tf.int64), 5)
    graph_crops, graph_offsets = aug.cut_batch(tf.constant(images), graph_choices)
    out = aug.finish(graph_crops, graph_offsets, graph_choices.flip, graph_choices.alpha)
    with tf.compat.v1.Session() as session:
      np.testing.assert_array_equal(session.run(out), eager)
