"""The test-time crops (alexnet_tf/eval_crops.py) against the NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import eval_crops

import references

SIZE = 20


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(7)
  return rng.integers(0, 256, (3, SIZE, SIZE + 3, 3), dtype=np.uint8)


def _mean(kind):
  rng = np.random.default_rng(8)
  return {'pixel': (rng.random((SIZE, SIZE + 3, 3)) * 255).astype(np.float32),
          'rgb': np.array([125.0, 120.0, 110.0], np.float32), 'none': None}[kind]


# (crop, pad): inside the image; inside with the padding unread; CIFAR-10's whole image
# (32 of 32 + 2 * 4); reaching into the padding.
@pytest.mark.parametrize('crop, pad', [(16, 0), (16, 2), (SIZE, 4), (SIZE + 2, 2)])
@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb', 'none'])
@pytest.mark.parametrize('ten_crop', [False, True])
def test_batch_and_single_image_equal_numpy(images, crop, pad, mean_kind, ten_crop):
  mean = _mean(mean_kind)
  got = eval_crops.eval_crops(tf.constant(images), mean, crop, pad, ten_crop).numpy()
  assert got.shape == (3,) + ((10,) if ten_crop else ()) + (crop, crop, 3)
  for i, image in enumerate(images):
    want = references.eval_image(image, mean, crop, pad, ten_crop)
    np.testing.assert_allclose(got[i], want, atol=1e-4)
    one = eval_crops.eval_crops(tf.constant(image), mean, crop, pad, ten_crop).numpy()
    np.testing.assert_array_equal(one, got[i])


@pytest.mark.parametrize('ten_crop', [False, True])
def test_images_of_unknown_size(images, ten_crop):
  # Datasets of mixed sizes crop each image before batching, its size known only at run time.
  mean = _mean('rgb')
  crops = tf.function(lambda t: eval_crops.eval_crops(t, mean, 16, 2, ten_crop),
                      input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  for image in (images[0], images[1, 2:, :15]):
    np.testing.assert_allclose(crops(tf.constant(image)),
                               references.eval_image(image, mean, 16, 2, ten_crop), atol=1e-4)


def test_ten_crop_names_follow_the_order():
  assert eval_crops.TEN_CROP_NAMES[0] == 'centre' and len(eval_crops.TEN_CROP_NAMES) == 10
  assert eval_crops.five_crop_offsets(13, 17, 9) == [(2, 4), (0, 0), (0, 8), (4, 0), (4, 8)]
