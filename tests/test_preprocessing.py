"""Each preprocessing op against a NumPy reference (alexnet_tf/preprocessing.py)."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import config as config_lib
from alexnet_tf import preprocessing as pp
from alexnet_tf import records

SIZE = 20  # stored images are SIZE x SIZE in most tests
CROP = 16
DATA = config_lib.DataConfig(crop_size=CROP)


@pytest.fixture(scope='module')
def rng():
  return np.random.default_rng(1234)


@pytest.fixture(scope='module')
def image(rng):
  return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def mean(rng):
  return (rng.random((SIZE, SIZE, 3)) * 255).astype(np.float32)


@pytest.fixture(scope='module')
def color_stats(rng):
  pixels = rng.random((500, 3)) @ np.array([[60., 10, 0], [20, 50, 5], [0, 30, 40]]) + 50
  return records.ColorStats.from_moments(pixels.sum(0), pixels.T @ pixels, len(pixels))


def seed(n):
  return tf.constant([7, n], tf.int64)


def numpy_lighting(alpha, stats):
  vectors = np.asarray(stats.eigenvectors, np.float64)
  return vectors @ (np.asarray(alpha, np.float64) * np.sqrt(stats.eigenvalues))


def numpy_train(image, mean, offset, flip, shift, crop_size=CROP, pad=0):
  """The reference: (pad) crop image and mean identically, subtract, mirror, add the shift."""
  x = image.astype(np.float32)
  if pad:
    x = np.pad(x - mean, [(pad, pad), (pad, pad), (0, 0)])
    mean = np.zeros_like(x)
  y0, x0 = offset
  x = x[y0:y0 + crop_size, x0:x0 + crop_size] - mean[y0:y0 + crop_size, x0:x0 + crop_size]
  if flip:
    x = x[:, ::-1]
  return x + np.asarray(shift, np.float32)


def encode(pixels, fmt):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
  return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# Random parameters


def test_crop_offsets_are_uniform_and_inside():
  params = pp.sample_train_params(seed(0), 20, 23, DATA, batch_shape=[2000])
  offsets = params.offset.numpy()
  assert offsets.shape == (2000, 2)
  # Rows 0..4 and columns 0..7 are the possible corners; every one of them occurs.
  assert sorted(set(offsets[:, 0])) == list(range(20 - CROP + 1))
  assert sorted(set(offsets[:, 1])) == list(range(23 - CROP + 1))
  counts = np.bincount(offsets[:, 1], minlength=8)
  assert counts.min() > 2000 / 8 * 0.7
  flips = params.flip.numpy()
  assert 0.4 < flips.mean() < 0.6
  alpha = params.alpha.numpy()
  assert alpha.shape == (2000, 3)
  np.testing.assert_allclose(alpha.std(0), DATA.pca_lighting_std, rtol=0.1)


def test_crop_offset_maps_uniform_edges_inside():
  offsets = pp.crop_offset(tf.constant([[0.0, 0.0], [0.999999, 0.9999999]]), 20, 23, CROP)
  np.testing.assert_array_equal(offsets, [[0, 0], [4, 7]])


def test_params_are_a_function_of_the_seed():
  a = pp.sample_train_params(seed(3), 30, 30, DATA)
  b = pp.sample_train_params(seed(3), 30, 30, DATA)
  c = pp.sample_train_params(seed(4), 30, 30, DATA)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.alpha, c.alpha)


@pytest.mark.parametrize('changes, flip_is_none, alpha_is_none', [
    (dict(random_flip=False), True, False),
    (dict(pca_lighting_std=0.0), False, True),
])
def test_disabled_augmentations_draw_nothing(changes, flip_is_none, alpha_is_none):
  params = pp.sample_train_params(seed(0), 30, 30, dataclasses.replace(DATA, **changes))
  assert (params.flip is None) == flip_is_none
  assert (params.alpha is None) == alpha_is_none


# ---------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize('offset', [(0, 0), (4, 4), (0, 4), (3, 1)])
def test_crop_equals_numpy_slice(image, offset):
  got = pp.crop(tf.constant(image), offset, CROP).numpy()
  np.testing.assert_array_equal(got, image[offset[0]:offset[0] + CROP,
                                           offset[1]:offset[1] + CROP])


@pytest.mark.parametrize('batch', [False, True])
def test_flip_equals_numpy(image, batch):
  x = np.stack([image, image[::-1]]) if batch else image
  np.testing.assert_array_equal(pp.flip_left_right(tf.constant(x)).numpy(), x[..., :, ::-1, :])


def test_crop_flip_batch_equals_numpy(rng):
  images = rng.integers(0, 256, (4, 12, 14, 3), dtype=np.uint8)
  offsets = np.array([[0, 0], [4, 6], [2, 3], [4, 0]], np.int32)
  flips = np.array([False, True, True, False])
  got = pp.crop_flip_batch(tf.constant(images), offsets, flips, 8).numpy()
  for i, ((y, x), flip) in enumerate(zip(offsets, flips)):
    want = images[i, y:y + 8, x:x + 8]
    np.testing.assert_array_equal(got[i], want[:, ::-1] if flip else want)


def test_ten_crop_positions_and_order(rng):
  x = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
  c = 9
  assert pp.ten_crop_offsets(13, 17, c) == [(2, 4), (0, 0), (0, 8), (4, 0), (4, 8)]
  want = [x[2:11, 4:13], x[0:9, 0:9], x[0:9, 8:17], x[4:13, 0:9], x[4:13, 8:17]]
  want = np.stack(want + [w[:, ::-1] for w in want])
  np.testing.assert_array_equal(pp.ten_crops(tf.constant(x), c).numpy(), want)
  # The same from a tensor whose size is known only at run time.
  dynamic = tf.function(lambda t: pp.ten_crops(t, c),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  np.testing.assert_array_equal(dynamic(tf.constant(x)).numpy(), want)
  assert len(pp.TEN_CROP_NAMES) == 10


# ---------------------------------------------------------------------------------------
# Colour


def test_lighting_offset_equals_numpy(color_stats):
  alphas = np.array([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0], [-1.0, 0.5, 2.0]], np.float32)
  got = pp.lighting_offset(alphas, color_stats.eigenvalues, color_stats.eigenvectors).numpy()
  want = np.stack([numpy_lighting(a, color_stats) for a in alphas])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # sqrt(eigenvalue) scaling (Krizhevsky's code), not the eigenvalue: unit alpha along the
  # first eigenvector moves the pixel by exactly that component's standard deviation.
  one = pp.lighting_offset([1.0, 0.0, 0.0], color_stats.eigenvalues, color_stats.eigenvectors)
  np.testing.assert_allclose(np.linalg.norm(one), np.sqrt(color_stats.eigenvalues[0]), rtol=1e-5)


@pytest.mark.parametrize('image_shape, values_shape', [
    ((5, 7, 3), (3,)), ((4, 5, 7, 3), (3,)), ((4, 5, 7, 3), (4, 3))])
def test_add_per_channel_equals_broadcast(rng, image_shape, values_shape):
  x = rng.random(image_shape).astype(np.float32)
  v = rng.random(values_shape).astype(np.float32)
  want = x + (v[:, None, None, :] if len(values_shape) == 2 else v)
  np.testing.assert_allclose(pp.add_per_channel(tf.constant(x), v).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize('kind', ['pixel', 'rgb', 'none'])
def test_subtract_mean_crops_the_mean_like_the_image(image, mean, kind):
  offset = (3, 1)
  x = image[3:3 + CROP, 1:1 + CROP].astype(np.float32)
  the_mean = {'pixel': mean, 'rgb': mean.mean((0, 1)), 'none': None}[kind]
  want = {'pixel': x - mean[3:3 + CROP, 1:1 + CROP], 'rgb': x - mean.mean((0, 1)),
          'none': x}[kind]
  got = pp.subtract_mean(tf.constant(x), the_mean, offset).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_mean_of_another_size_is_rejected(image, mean):
  with pytest.raises(ValueError, match='mean image is'):
    pp.preprocess_for_eval(tf.constant(image[:18, :18]), mean, DATA)
  with pytest.raises(ValueError, match=r'\[3\] \(per channel\)'):
    pp.subtract_mean(tf.zeros([4, 4, 3]), np.zeros([4, 4]))


# ---------------------------------------------------------------------------------------
# Training pipelines for forced and for seeded random choices


@pytest.mark.parametrize('offset, flip, alpha', [
    ((0, 0), False, None), ((4, 4), True, (0.3, -0.1, 0.2)), ((2, 3), True, None),
    ((1, 4), False, (-0.5, 0.5, 0.0))])
@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb'])
def test_augment_crop_equals_numpy(image, mean, color_stats, offset, flip, alpha, mean_kind):
  the_mean = mean if mean_kind == 'pixel' else mean.mean((0, 1))
  crop = image[offset[0]:offset[0] + CROP, offset[1]:offset[1] + CROP]
  params = pp.TrainParams(tf.constant(offset, tf.int32), tf.constant(flip),
                          None if alpha is None else tf.constant(alpha, tf.float32))
  got = pp.augment_crop(tf.constant(crop), params, the_mean, color_stats).numpy()
  shift = 0.0 if alpha is None else numpy_lighting(alpha, color_stats)
  full_mean = the_mean if mean_kind == 'pixel' else np.broadcast_to(the_mean, mean.shape)
  want = numpy_train(image, full_mean, offset, flip, shift)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize('pad, crop_size', [(0, CROP), (2, SIZE), (3, 22)])
def test_preprocess_for_train_follows_its_params(image, mean, color_stats, pad, crop_size):
  data = dataclasses.replace(DATA, crop_size=crop_size, pad=pad)
  for n in range(6):
    got = pp.preprocess_for_train(tf.constant(image), mean, color_stats, data, seed(n)).numpy()
    params = pp.sample_train_params(seed(n), SIZE + 2 * pad, SIZE + 2 * pad, data)
    want = numpy_train(image, mean, params.offset.numpy(), bool(params.flip),
                       numpy_lighting(params.alpha.numpy(), color_stats), crop_size, pad)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_augment_batch_equals_per_image_reference(rng, mean, color_stats):
  data = dataclasses.replace(DATA, crop_size=SIZE, pad=3)
  images = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
  got = pp.augment_batch(images, mean, color_stats, data, seed(9)).numpy()
  params = pp.sample_train_params(seed(9), SIZE + 6, SIZE + 6, data, batch_shape=[6])
  assert got.shape == (6, SIZE, SIZE, 3)
  assert params.flip.numpy().any() and not params.flip.numpy().all()
  for i in range(6):
    want = numpy_train(images[i], mean, params.offset[i].numpy(), bool(params.flip[i]),
                       numpy_lighting(params.alpha[i].numpy(), color_stats), SIZE, 3)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-3)


def _mean_of_kind(mean, kind):
  """(the mean argument, the same mean as a full [H, W, 3] array for numpy_train)."""
  if kind == 'pixel':
    return mean, mean
  if kind == 'rgb':
    return mean.mean((0, 1)), np.broadcast_to(mean.mean((0, 1)), mean.shape)
  return None, np.zeros_like(mean)


def _stack_params(params_list):
  """Per-image TrainParams of scalars -> one TrainParams with a batch dimension."""
  return pp.TrainParams(*[None if field[0] is None else tf.stack(field)
                          for field in zip(*params_list)])


@pytest.mark.parametrize('static_batch', [True, False])
@pytest.mark.parametrize('random_flip, lighting', [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb', 'none'])
def test_finish_train_batch_equals_numpy(mean, color_stats, mean_kind, random_flip, lighting,
                                         static_batch):
  rng = np.random.default_rng(5)  # not the shared one: later tests depend on its sequence
  images = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
  offsets = np.array([[0, 0], [4, 4], [0, 4], [3, 1], [4, 0]], np.int32)
  flips = np.array([False, True, True, False, True]) & random_flip
  alphas = rng.normal(0, 0.5, (5, 3)).astype(np.float32) if lighting else None
  # The integer stage's output: the windows of the stored images, mirrored where flipped.
  crops = np.stack([im[y:y + CROP, x:x + CROP][:, ::-1 if f else 1]
                    for im, (y, x), f in zip(images, offsets, flips)])
  the_mean, full_mean = _mean_of_kind(mean, mean_kind)
  inputs = {'crops': crops, 'offset': offsets}
  if random_flip:
    inputs['flip'] = flips
  if lighting:
    inputs['alpha'] = alphas
  # Traced with the batch dimension known, or not (then the mean windows take another path).
  batch = list(crops.shape[:1]) if static_batch else [None]
  finish = tf.function(
      lambda t: pp.finish_train_batch(t['crops'], pp.TrainParams(t['offset'], t.get('flip'),
                                                                 t.get('alpha')),
                                      the_mean, color_stats),
      input_signature=[{k: tf.TensorSpec(batch + list(v.shape[1:]), tf.as_dtype(v.dtype))
                        for k, v in inputs.items()}])
  got = finish(inputs).numpy()
  assert got.shape == (5, CROP, CROP, 3) and got.dtype == np.float32
  for i in range(5):
    shift = 0.0 if alphas is None else numpy_lighting(alphas[i], color_stats)
    want = numpy_train(images[i], full_mean, offsets[i], flips[i], shift)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-3, err_msg=f'image {i}')


@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb'])
def test_integer_stage_and_batched_finish_equal_the_per_image_path(mean, color_stats,
                                                                   mean_kind):
  rng = np.random.default_rng(6)  # not the shared one: later tests depend on its sequence
  the_mean, _ = _mean_of_kind(mean, mean_kind)
  encoded = [tf.constant(encode(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), fmt))
             for fmt in ('JPEG', 'PNG', 'JPEG', 'JPEG', 'PNG', 'JPEG')]
  stages = [pp.decode_train_crop(e, DATA, seed(n), the_mean) for n, e in enumerate(encoded)]
  crops = tf.stack([crop for crop, _ in stages])
  assert crops.dtype == tf.uint8 and crops.shape == (6, CROP, CROP, 3)
  params = _stack_params([p for _, p in stages])
  assert params.flip.numpy().any() and not params.flip.numpy().all()
  got = pp.finish_train_batch(crops, params, the_mean, color_stats).numpy()
  for n, e in enumerate(encoded):
    want = pp.preprocess_encoded_for_train(e, the_mean, color_stats, DATA, seed(n)).numpy()
    # Bit for bit on the development machine; the tolerance allows another CPU's matvec
    # kernel to round the batch's lighting shifts differently from one image's.
    np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-4)


def test_padding_is_zero_after_mean_subtraction(image, mean):
  # The corner window of a 4-padded image is half padding: exactly 0 there (the mean).
  data = dataclasses.replace(DATA, crop_size=SIZE, pad=4, random_flip=False,
                             pca_lighting_std=0.0)
  params = pp.TrainParams(tf.constant([[0, 0]]), None, None)
  got = pp.augment_batch_with(image[None], params, mean, None, data).numpy()[0]
  assert np.all(got[:4] == 0) and np.all(got[:, :4] == 0)
  np.testing.assert_allclose(got[4:, 4:], image[:SIZE - 4, :SIZE - 4] - mean[:SIZE - 4, :SIZE - 4],
                             atol=1e-4)


# ---------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_decode_crop_equals_full_decode_then_slice(rng, fmt):
  # Pillow's JPEGs have 4:2:0 chroma, where a plain decode_and_crop_jpeg differs from the
  # full decode on window edges at 16-pixel boundaries (about half of all windows).
  pixels = (rng.random((45, 47, 3)) * 255).astype(np.uint8)
  encoded = tf.constant(encode(pixels, fmt))
  full = tf.io.decode_image(encoded, channels=3).numpy()
  decode = tf.function(lambda offset: pp.decode_crop(encoded, offset, CROP))
  for offset in [(0, x) for x in range(47 - CROP + 1)] + [(13, 5), (29, 31), (8, 16)]:
    np.testing.assert_array_equal(decode(tf.constant(offset)).numpy(),
                                  full[offset[0]:offset[0] + CROP, offset[1]:offset[1] + CROP],
                                  err_msg=f'window at {offset}')


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_encoded_training_path_equals_decoded_path(mean, color_stats, rng, fmt):
  pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  encoded = tf.constant(encode(pixels, fmt))
  decoded = pp.decode_image(encoded)
  for n in range(4):
    got = pp.preprocess_encoded_for_train(encoded, mean, color_stats, DATA, seed(n))
    want = pp.preprocess_for_train(decoded, mean, color_stats, DATA, seed(n))
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    # The same holds for the integer stage alone: uint8 crop and random choices.
    (crop, params), (want_crop, want_params) = (
        pp.decode_train_crop(encoded, DATA, seed(n), mean),
        pp.train_crop(decoded, DATA, seed(n), mean))
    assert crop.dtype == tf.uint8
    for x, y in zip((crop, *params), (want_crop, *want_params)):
      np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_planned_crop_equals_full_decode_then_slice_and_mirror(rng, fmt):
  # 45x47 with 4:2:0 chroma: every column offset, including the 16-pixel boundaries and the
  # last position (no extra column on the right), both mirrors.
  height, width = 45, 47
  pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
  encoded = tf.constant(encode(pixels, fmt))
  full = tf.io.decode_image(encoded, channels=3).numpy()
  offsets = [(0, x) for x in range(width - CROP + 1)] + [(height - CROP, 5), (29, 31), (8, 16)]
  offset = tf.constant(offsets, tf.int32)
  window, begin = pp.jpeg_crop_window(offset, CROP, width)  # batched, as plan_train_crops
  decode = tf.function(lambda plan: pp.decode_planned_crop(encoded, plan, CROP))
  for i, (y, x) in enumerate(offsets):
    for flip in (False, True):
      plan = pp.CropPlan(pp.TrainParams(offset[i], tf.constant(flip), None), window[i],
                         begin[i])
      want = full[y:y + CROP, x:x + CROP]
      np.testing.assert_array_equal(decode(plan).numpy(), want[:, ::-1] if flip else want,
                                    err_msg=f'window at {(y, x)}, flip {flip}')


def test_plans_are_uniform_and_a_function_of_the_seed(mean):
  size = (SIZE, SIZE + 3)
  plan = pp.plan_train_crops(seed(0), size, DATA, 4000)
  offsets = plan.params.offset.numpy()
  assert offsets.shape == (4000, 2)
  # Every position 0..size - crop along both axes, each about equally often.
  for axis in (0, 1):
    positions = size[axis] - CROP + 1
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions
    assert counts.min() > 4000 / positions * 0.8 and counts.max() < 4000 / positions * 1.2
  assert 0.45 < plan.params.flip.numpy().mean() < 0.55
  np.testing.assert_allclose(plan.params.alpha.numpy().std(0), DATA.pca_lighting_std,
                             rtol=0.1)
  # The JPEG windows hold the crop plus one column each side where the image has one.
  window, begin = plan.jpeg_window.numpy(), plan.jpeg_begin.numpy()
  y, x = offsets[:, 0], offsets[:, 1]
  np.testing.assert_array_equal(window[:, 0], y)
  np.testing.assert_array_equal(window[:, 1] + begin[:, 1], x)
  np.testing.assert_array_equal(begin[:, 1], np.minimum(x, 1))
  np.testing.assert_array_equal(window[:, 1] + window[:, 3],
                                np.minimum(x + CROP + 1, size[1]))
  assert (window[:, 2] == CROP).all() and (begin[:, [0, 2]] == 0).all()
  again = pp.plan_train_crops(seed(0), size, DATA, 4000)
  other = pp.plan_train_crops(seed(1), size, DATA, 4000)
  for x, y in zip(tf.nest.flatten(plan), tf.nest.flatten(again)):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(offsets, other.params.offset.numpy())
  with pytest.raises(ValueError, match='smaller than the crop size'):
    pp.plan_train_crops(seed(0), (12, 30), DATA, 8)
  with pytest.raises(ValueError, match='per-pixel mean'):
    pp.plan_train_crops(seed(0), size, DATA, 8, mean)


def test_too_small_images_fail_clearly(mean):
  encoded = tf.constant(encode(np.zeros((12, 30, 3), np.uint8), 'JPEG'))
  with pytest.raises(tf.errors.InvalidArgumentError, match='smaller than the crop size'):
    pp.preprocess_encoded_for_train(encoded, None, None, DATA, seed(0))
  with pytest.raises(ValueError, match='smaller than the crop size'):
    pp.preprocess_for_train(tf.zeros([12, 30, 3], tf.uint8), None, None, DATA, seed(0))
  with pytest.raises(tf.errors.InvalidArgumentError, match='per-pixel mean'):
    pp.preprocess_encoded_for_train(tf.constant(encode(np.zeros((24, 24, 3), np.uint8), 'PNG')),
                                    mean, None, DATA, seed(0))


def test_resize_to_stored(rng):
  stored = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  # Already the stored size: untouched, so serving equals the TFRecord eval path.
  np.testing.assert_array_equal(pp.resize_to_stored(stored, SIZE).numpy(), stored)
  # Otherwise like the converter: Pillow's bicubic resampling of the central square.
  smooth = np.kron(rng.integers(0, 256, (7, 9, 3)), np.ones((9, 9, 1))).astype(np.uint8)
  photo = np.asarray(Image.fromarray(smooth).resize((90, 63), Image.BICUBIC))
  left = (90 - 63) / 2
  want = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.BICUBIC,
                                                  box=(left, 0, left + 63, 63)), np.int32)
  got = pp.resize_to_stored(photo, SIZE).numpy().astype(np.int32)
  assert got.shape == (SIZE, SIZE, 3)
  assert np.abs(got - want).max() <= 3
  decoded = pp.decode_for_serving(tf.constant(encode(photo, 'PNG')), SIZE).numpy()
  np.testing.assert_array_equal(decoded, got)


# ---------------------------------------------------------------------------------------
# Evaluation


@pytest.mark.parametrize('pad', [0, 2])
def test_preprocess_for_eval_centre_and_ten_crops(image, mean, pad):
  data = dataclasses.replace(DATA, pad=pad)
  x = np.pad(image.astype(np.float32) - mean, [(pad, pad), (pad, pad), (0, 0)])
  side = SIZE + 2 * pad
  y0 = (side - CROP) // 2
  centre = pp.preprocess_for_eval(tf.constant(image), mean, data).numpy()
  np.testing.assert_allclose(centre, x[y0:y0 + CROP, y0:y0 + CROP], atol=1e-4)
  crops = pp.preprocess_for_eval(tf.constant(image), mean, data, ten_crop=True).numpy()
  assert crops.shape == (10, CROP, CROP, 3)
  for i, (y, x0) in enumerate(pp.ten_crop_offsets(side, side, CROP)):
    window = x[y:y + CROP, x0:x0 + CROP]
    np.testing.assert_allclose(crops[i], window, atol=1e-4)
    np.testing.assert_allclose(crops[i + 5], window[:, ::-1], atol=1e-4)
  np.testing.assert_array_equal(crops[0], centre)


# (crop, pad): inside the image; inside with padding unread; the whole image (CIFAR-10's
# 32 of 32 + 2 * 4); reaching into the padding.
@pytest.mark.parametrize('crop,pad', [(CROP, 0), (CROP, 2), (SIZE, 4), (SIZE + 2, 2)])
@pytest.mark.parametrize('mean_kind', ['pixel', 'rgb', 'none'])
def test_centre_crop_batch_equals_per_image_eval(image, mean, crop, pad, mean_kind):
  data = dataclasses.replace(DATA, crop_size=crop, pad=pad)
  means = {'pixel': mean, 'rgb': mean.mean(axis=(0, 1)), 'none': None}
  batch = np.stack([image, image[::-1], 255 - image])
  got = pp.centre_crop_batch_for_eval(tf.constant(batch), means[mean_kind], data).numpy()
  assert got.shape == (3, crop, crop, 3)
  for i in range(3):
    want = pp.preprocess_for_eval(tf.constant(batch[i]), means[mean_kind], data).numpy()
    np.testing.assert_array_equal(got[i], want)


def test_centre_crop_batch_rejects_images_smaller_than_the_crop(mean):
  with pytest.raises(ValueError, match='smaller than'):
    pp.centre_crop_batch_for_eval(tf.zeros([1, CROP - 1, CROP - 1, 3], tf.uint8), None, DATA)


def test_graph_mode_gives_the_eager_results(image, mean, color_stats):
  encoded = encode(image, 'JPEG')
  eager = pp.preprocess_encoded_for_train(tf.constant(encoded), mean, color_stats, DATA,
                                          seed(5)).numpy()
  eager_ten = pp.preprocess_for_eval(tf.io.decode_jpeg(encoded), mean, DATA, ten_crop=True)
  with tf.Graph().as_default():
    # The mean as a graph tensor, as a serving receiver might hold it.
    mean_tensor = tf.constant(mean)
    out = pp.preprocess_encoded_for_train(tf.constant(encoded), mean_tensor, color_stats, DATA,
                                          tf.constant([7, 5], tf.int64))
    ten = pp.preprocess_for_eval(tf.io.decode_jpeg(encoded), mean_tensor, DATA, ten_crop=True)
    with tf.compat.v1.Session() as session:
      graph, crops = session.run([out, ten])
  np.testing.assert_array_equal(graph, eager)
  np.testing.assert_array_equal(crops, eager_ten.numpy())


def test_bad_data_config_is_rejected(image):
  with pytest.raises(ValueError, match='subtract_mean'):
    pp.preprocess_for_eval(image, None, dataclasses.replace(DATA, subtract_mean='median'))
  with pytest.raises(ValueError, match='pca_lighting_std'):
    pp.check_data_config(dataclasses.replace(DATA, pca_lighting_std=-1.0))
  with pytest.raises(ValueError, match='colour statistics'):
    pp.preprocess_for_train(tf.constant(image), None, None, DATA, seed(0))
  with pytest.raises(ValueError, match='pad == 0'):
    pp.decode_train_crop(tf.constant(encode(image, 'JPEG')), dataclasses.replace(DATA, pad=2),
                         seed(0))
  with pytest.raises(ValueError, match='static crop size'):
    pp.finish_train_batch(tf.zeros([2, CROP, CROP], tf.uint8),
                          pp.TrainParams(tf.zeros([2, 2], tf.int32), None, None), None, None)
