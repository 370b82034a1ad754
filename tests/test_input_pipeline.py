"""tf.data pipelines over tiny TFRecord shards written here (alexnet_tf/input_pipeline.py).

Two datasets: 'jpeg' is ImageNet-like (JPEG, random crops decoded with the fused op, per-pixel
mean) and 'png' is CIFAR-like (PNG, padding, decoded images cached, whole-batch augmentation).
Every example's label is its own index, so labels identify examples.
"""

import dataclasses
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import config as config_lib
from alexnet_tf import input_pipeline
from alexnet_tf import preprocessing
from alexnet_tf import records

COUNTS = {records.TRAIN: 30, records.VALIDATION: 13}
SHARDS = {records.TRAIN: 3, records.VALIDATION: 2}
KINDS = {
    # kind: (format, stored size, DataConfig)
    'jpeg': ('JPEG', 24, config_lib.DataConfig(crop_size=20, shuffle_buffer=64)),
    'png': ('PNG', 12, config_lib.DataConfig(crop_size=12, pad=2, cache_decoded=True,
                                             shuffle_buffer=64)),
}


def _encode(pixels, fmt):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
  return buffer.getvalue()


def _example(encoded, label):
  feature = {
      records.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
      records.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_dataset(directory, fmt, size, seed=0, with_mean=True):
  """Shards of random images (label = index within the split), dataset.json, the mean.

  Returns:
    {split: the decoded stored images uint8 [count, size, size, 3] in file order}.
  """
  rng = np.random.default_rng(seed)
  decoded = {}
  for split, count in COUNTS.items():
    # Smooth images, so that JPEG keeps them recognisable.
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.uint8)
    pixels = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR))
              for c in coarse]
    encoded = [_encode(p, fmt) for p in pixels]
    num_shards = SHARDS[split]
    # Shard i holds examples i*k .. (i+1)*k - 1: file order is label order.
    per_shard = -(-count // num_shards)
    for shard in range(num_shards):
      path = os.path.join(directory, records.shard_name(split, shard, num_shards))
      with tf.io.TFRecordWriter(path) as writer:
        for index in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
          writer.write(_example(encoded[index], index))
    decoded[split] = np.stack([tf.io.decode_image(e, channels=3).numpy() for e in encoded])
  train = decoded[records.TRAIN].astype(np.float64)
  flat = train.reshape(-1, 3)
  metadata = records.DatasetMetadata(
      name=f'test-{fmt}', classes=tuple(f'c{i}' for i in range(COUNTS[records.TRAIN])),
      counts=dict(COUNTS), num_shards=dict(SHARDS), image_size=(size, size),
      color_stats=records.ColorStats.from_moments(flat.sum(0), flat.T @ flat, len(flat)))
  records.write_metadata(directory, metadata,
                         train.mean(0).astype(np.float32) if with_mean else None)
  return decoded


@pytest.fixture(scope='module', params=sorted(KINDS))
def dataset(request, tmp_path_factory):
  """(kind, data_dir, DataConfig, {split: decoded images})."""
  fmt, size, data_config = KINDS[request.param]
  directory = str(tmp_path_factory.mktemp(request.param))
  return request.param, directory, data_config, write_dataset(directory, fmt, size)


def collect(ds, limit=None):
  """All (images, labels) of a dataset as NumPy arrays, at most `limit` batches."""
  images, labels = [], []
  for features, label in ds.take(limit) if limit else ds:
    images.append(features['image'].numpy())
    labels.append(label.numpy())
  return images, labels


def test_eval_reads_each_example_once_in_file_order(dataset):
  _, directory, data_config, decoded = dataset
  ds = input_pipeline.make_dataset(directory, records.VALIDATION, data_config, 4, training=False)
  images, labels = collect(ds)
  assert [len(b) for b in labels] == [4, 4, 4, 1]  # the partial batch is kept
  np.testing.assert_array_equal(np.concatenate(labels), np.arange(COUNTS[records.VALIDATION]))
  mean = records.read_mean_image(directory)
  pad, crop = data_config.pad, data_config.crop_size
  for got, stored in zip(np.concatenate(images), decoded[records.VALIDATION]):
    x = np.pad(stored.astype(np.float32) - mean, [(pad, pad), (pad, pad), (0, 0)])
    y0 = (x.shape[0] - crop) // 2
    np.testing.assert_allclose(got, x[y0:y0 + crop, y0:y0 + crop], atol=1e-4)


def test_ten_crop_eval(dataset):
  _, directory, data_config, _ = dataset
  crop = data_config.crop_size
  ten = input_pipeline.make_dataset(directory, records.VALIDATION, data_config, 5,
                                    training=False, ten_crop=True)
  centre = input_pipeline.make_dataset(directory, records.VALIDATION, data_config, 5,
                                       training=False)
  (ten_images, ten_labels), (centre_images, centre_labels) = collect(ten), collect(centre)
  assert ten_images[0].shape == (5, 10, crop, crop, 3) and ten_images[0].dtype == np.float32
  np.testing.assert_array_equal(np.concatenate(ten_labels), np.concatenate(centre_labels))
  np.testing.assert_array_equal(np.concatenate(ten_images)[:, 0], np.concatenate(centre_images))
  np.testing.assert_array_equal(np.concatenate(ten_images)[:, 5],
                                np.concatenate(centre_images)[:, :, ::-1])


def test_training_batches(dataset):
  _, directory, data_config, _ = dataset
  crop = data_config.crop_size
  ds = input_pipeline.make_dataset(directory, records.TRAIN, data_config, 8, training=True,
                                   seed=3)
  features, labels = ds.element_spec
  assert features['image'].shape.as_list() == [8, crop, crop, 3]  # static: drop_remainder
  assert features['image'].dtype == tf.float32 and labels.dtype == tf.int32
  images, labels = collect(ds, limit=6)  # 48 > 30 examples: repeats by default
  assert all(b.shape == (8, crop, crop, 3) for b in images)
  assert all(np.isfinite(b).all() for b in images)


def test_training_epoch_is_a_shuffled_permutation(dataset):
  _, directory, data_config, _ = dataset
  ds = input_pipeline.make_dataset(directory, records.TRAIN, data_config, 7, training=True,
                                   num_epochs=2, seed=1, drop_remainder=False)
  labels = np.concatenate(collect(ds)[1])
  count = COUNTS[records.TRAIN]
  assert len(labels) == 2 * count
  for epoch in (labels[:count], labels[count:]):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(count))
  assert not np.array_equal(labels[:count], np.arange(count))
  assert not np.array_equal(labels[:count], labels[count:])  # reshuffled every epoch


def _views(stored, mean, data_config):
  """Every training input an image can become with lighting off: {(y, x, flip): crop}."""
  pad, crop = data_config.pad, data_config.crop_size
  x = np.pad(stored.astype(np.float32) - mean, [(pad, pad), (pad, pad), (0, 0)])
  views = {}
  for y0 in range(x.shape[0] - crop + 1):
    for x0 in range(x.shape[1] - crop + 1):
      window = x[y0:y0 + crop, x0:x0 + crop]
      views[(y0, x0, False)] = window
      views[(y0, x0, True)] = window[:, ::-1]
  return views


def test_training_images_are_crops_and_mirrors_of_their_example(dataset):
  _, directory, data_config, decoded = dataset
  data_config = dataclasses.replace(data_config, pca_lighting_std=0.0)
  ds = input_pipeline.make_dataset(directory, records.TRAIN, data_config, 10, training=True,
                                   seed=5)
  images, labels = collect(ds, limit=2)
  mean = records.read_mean_image(directory)
  seen_flips = set()
  for image, label in zip(np.concatenate(images), np.concatenate(labels)):
    views = _views(decoded[records.TRAIN][label], mean, data_config)
    matches = [key for key, view in views.items() if np.allclose(image, view, atol=1e-3)]
    assert matches, f'training image of example {label} is no crop of it'
    seen_flips.update(key[2] for key in matches)
  assert seen_flips == {False, True}


def test_lighting_shifts_each_image_by_one_colour(dataset):
  _, directory, data_config, _ = dataset
  runs = [collect(input_pipeline.make_dataset(
      directory, records.TRAIN, dataclasses.replace(data_config, pca_lighting_std=std), 8,
      training=True, seed=2), limit=1)[0][0] for std in (0.0, 0.1)]
  shift = runs[1] - runs[0]  # same seed: same crops and mirrors, only the lighting differs
  per_image = shift.reshape(8, -1, 3)
  np.testing.assert_allclose(per_image, per_image[:, :1, :].repeat(per_image.shape[1], 1),
                             atol=1e-3)
  assert np.abs(per_image[:, 0]).max() > 0.1


def test_seeded_training_is_reproducible_in_eager_and_graph_mode(dataset):
  _, directory, data_config, _ = dataset

  def first_batches(seed):
    return collect(input_pipeline.make_dataset(directory, records.TRAIN, data_config, 6,
                                               training=True, seed=seed), limit=3)

  (a_images, a_labels), (b_images, b_labels) = first_batches(11), first_batches(11)
  np.testing.assert_array_equal(np.concatenate(a_labels), np.concatenate(b_labels))
  np.testing.assert_array_equal(np.concatenate(a_images), np.concatenate(b_images))
  c_images, _ = first_batches(12)
  assert not np.array_equal(np.concatenate(a_images), np.concatenate(c_images))
  # The Estimator calls the same input_fn inside a graph, under /cpu:0; for pad == 0 it
  # finishes the uint8 batches in the graph.
  input_fn = input_pipeline.make_input_fn(directory, records.TRAIN, data_config, 6,
                                          training=True, seed=11)
  with tf.Graph().as_default():
    with tf.device('/cpu:0'):
      next_batch = input_fn()
    features, labels = next_batch
    crop = data_config.crop_size
    assert set(features) == {'image'} and labels.dtype == tf.int32
    assert features['image'].dtype == tf.float32
    assert features['image'].shape.as_list() == [6, crop, crop, 3]
    with tf.compat.v1.Session() as session:
      graph = [session.run(next_batch) for _ in range(3)]
  np.testing.assert_array_equal(np.concatenate([g[1] for g in graph]), np.concatenate(a_labels))
  np.testing.assert_array_equal(np.concatenate([g[0]['image'] for g in graph]),
                                np.concatenate(a_images))


@pytest.mark.parametrize('cache_decoded', [False, True])
def test_deferred_form_is_uint8_crops_that_finish_to_the_float_batches(dataset, cache_decoded):
  kind, directory, data_config, decoded = dataset
  data_config = dataclasses.replace(data_config, cache_decoded=cache_decoded)

  def make(**kwargs):
    return input_pipeline.make_dataset(directory, records.TRAIN, data_config, 6,
                                       training=True, seed=4, **kwargs)

  if data_config.pad:
    with pytest.raises(ValueError, match='defer_float'):
      make(defer_float=True)
    return
  deferred = make(defer_float=True)
  crop = data_config.crop_size
  features_spec, _ = deferred.element_spec
  assert {k: (s.dtype, s.shape.as_list()) for k, s in features_spec.items()} == {
      'image': (tf.uint8, [6, crop, crop, 3]), 'crop_offset': (tf.int32, [6, 2]),
      'flip': (tf.bool, [6]), 'lighting_alpha': (tf.float32, [6, 3])}
  finish = input_pipeline.make_finish_fn(directory, data_config)
  for (features, labels), (floats, float_labels) in zip(deferred.take(3), make().take(3)):
    np.testing.assert_array_equal(labels, float_labels)
    np.testing.assert_array_equal(finish(features)['image'].numpy(), floats['image'].numpy())
    # Each uint8 image is its example's window at crop_offset, mirrored where flip.
    for image, label, (y, x), flip in zip(features['image'].numpy(), labels.numpy(),
                                          features['crop_offset'].numpy(),
                                          features['flip'].numpy()):
      window = decoded[records.TRAIN][label][y:y + crop, x:x + crop]
      np.testing.assert_array_equal(image, window[:, ::-1] if flip else window)


def test_estimator_trains_on_the_training_input_fn(dataset, tmp_path):
  _, directory, data_config, _ = dataset
  crop = data_config.crop_size
  seen = []

  def model_fn(features, labels, mode):
    images = features['image']
    seen.append((images.dtype, images.shape.as_list(), labels.dtype))
    weight = tf.compat.v1.get_variable('w', [], initializer=tf.compat.v1.zeros_initializer())
    loss = tf.square(weight - tf.reduce_mean(images))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(1e-3).minimize(
        loss, global_step=tf.compat.v1.train.get_or_create_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

  estimator = tf.estimator.Estimator(model_fn, model_dir=str(tmp_path))
  estimator.train(input_pipeline.make_input_fn(directory, records.TRAIN, data_config, 4,
                                               training=True, seed=1), max_steps=3)
  assert seen == [(tf.float32, [4, crop, crop, 3], tf.int32)]
  assert estimator.get_variable_value('global_step') == 3


def test_configuration_errors(tmp_path):
  directory = str(tmp_path)
  write_dataset(directory, 'JPEG', 24, with_mean=False)
  data_config = KINDS['jpeg'][2]
  with pytest.raises(ValueError, match='mean_image.npy'):
    input_pipeline.make_dataset(directory, records.TRAIN, data_config, 4, training=True)
  rgb = dataclasses.replace(data_config, subtract_mean='rgb')
  assert input_pipeline.load_mean(directory, rgb).shape == (3,)
  with pytest.raises(ValueError, match='smaller than the crop size 25'):
    input_pipeline.make_dataset(directory, records.TRAIN,
                                dataclasses.replace(rgb, crop_size=25), 4, training=True)
  with pytest.raises(ValueError, match='ten_crop'):
    input_pipeline.make_dataset(directory, records.TRAIN, rgb, 4, training=True, ten_crop=True)
  with pytest.raises(ValueError, match='exactly once'):
    input_pipeline.make_dataset(directory, records.VALIDATION, rgb, 4, training=False,
                                num_epochs=2)
  np.save(os.path.join(directory, records.MEAN_IMAGE_FILE), np.zeros((20, 24, 3), np.float32))
  with pytest.raises(ValueError, match='stored images are'):
    input_pipeline.make_dataset(directory, records.TRAIN, data_config, 4, training=True)
  with pytest.raises(FileNotFoundError, match='no TFRecord shards'):
    input_pipeline.make_dataset(directory, records.TEST, rgb, 4, training=False)


def _deferred_batches(directory, data_config, batch_size, seed, limit):
  ds = input_pipeline.make_dataset(directory, records.TRAIN, data_config, batch_size,
                                   training=True, seed=seed, defer_float=True)
  return [({k: v.numpy() for k, v in features.items()}, labels.numpy())
          for features, labels in ds.take(limit)]


def _check_windows(batches, stored, crop):
  """Each uint8 image of deferred batches is its example's window at crop_offset, mirrored
  where flip."""
  for features, labels in batches:
    for image, label, (y, x), flip in zip(features['image'], labels, features['crop_offset'],
                                          features['flip']):
      window = stored[label][y:y + crop, x:x + crop]
      np.testing.assert_array_equal(image, window[:, ::-1] if flip else window)


def test_crop_plans_are_blocks_drawn_from_the_seed():
  data_config = KINDS['jpeg'][2]
  block = input_pipeline.PLAN_BLOCK
  plans = input_pipeline.crop_plans(3, (24, 24), data_config)
  got = next(iter(plans.skip(block - 2).batch(4)))  # rows across a block boundary
  for i, n in enumerate(range(block - 2, block + 2)):
    want = preprocessing.plan_train_crops(tf.constant([3, n // block], tf.int64), (24, 24),
                                          data_config, block)
    row = n % block
    np.testing.assert_array_equal(got['crop_offset'][i], want.params.offset[row])
    np.testing.assert_array_equal(got['flip'][i], want.params.flip[row])
    np.testing.assert_array_equal(got['lighting_alpha'][i], want.params.alpha[row])
    np.testing.assert_array_equal(got['jpeg_window'][i], want.jpeg_window[row])
    np.testing.assert_array_equal(got['jpeg_begin'][i], want.jpeg_begin[row])


def test_training_crops_cover_every_position_uniformly(dataset):
  kind, directory, data_config, decoded = dataset
  if data_config.pad:
    return  # whole-batch augmentation: tested in test_preprocessing
  batches = _deferred_batches(directory, data_config, 30, seed=8, limit=40)
  offsets = np.concatenate([f['crop_offset'] for f, _ in batches])
  positions = 24 - data_config.crop_size + 1
  for axis in (0, 1):
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions
    assert counts.min() > len(offsets) / positions * 0.8, counts
    assert counts.max() < len(offsets) / positions * 1.2, counts
  flips = np.concatenate([f['flip'] for f, _ in batches])
  assert 0.45 < flips.mean() < 0.55
  # Exactness on a part of them (all 1200 would be slow).
  _check_windows(batches[:4], decoded[records.TRAIN], data_config.crop_size)
  # And the same seed gives the same batches.
  again = _deferred_batches(directory, data_config, 30, seed=8, limit=4)
  for (a, a_labels), (b, b_labels) in zip(batches[:4], again):
    np.testing.assert_array_equal(a_labels, b_labels)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_stored_images_of_unknown_size_are_drawn_per_image(tmp_path, fmt):
  # Without DatasetMetadata.image_size the window of each image is drawn from its own size.
  directory = str(tmp_path)
  decoded = write_dataset(directory, fmt, 24, with_mean=False)
  metadata = records.read_metadata(directory)
  records.write_metadata(directory, dataclasses.replace(metadata, image_size=None))
  data_config = dataclasses.replace(KINDS['jpeg'][2], subtract_mean='rgb')
  batches = _deferred_batches(directory, data_config, 6, seed=2, limit=3)
  _check_windows(batches, decoded[records.TRAIN], data_config.crop_size)
  again = _deferred_batches(directory, data_config, 6, seed=2, limit=3)
  for (a, _), (b, _) in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  # The float form is the finished deferred form (eager and in tf.data: the per-channel
  # mean and lighting adds may round differently in the last bit).
  finish = input_pipeline.make_finish_fn(directory, data_config)
  floats = input_pipeline.make_dataset(directory, records.TRAIN, data_config, 6,
                                       training=True, seed=2).take(3)
  for (features, labels), (want, want_labels) in zip(batches, floats):
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(
        finish({k: tf.constant(v) for k, v in features.items()})['image'].numpy(),
        want['image'].numpy(), rtol=0, atol=1e-4)
