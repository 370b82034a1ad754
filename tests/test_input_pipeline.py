"""tf.data pipelines over tiny TFRecord shards written here (alexnet_tf/input_pipeline.py).

Two datasets: 'jpeg' is ImageNet-like (JPEG, random crops decoded with the fused op, per-pixel
mean) and 'png' is CIFAR-like (PNG, padding, decoded images cached, cut per batch).
Every example's label is its own index, so labels identify examples.
"""

import dataclasses
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import config as config_lib
from alexnet_tf import input_pipeline
from alexnet_tf import records

import references

COUNTS = {records.TRAIN: 30, records.VALIDATION: 13}
SHARDS = {records.TRAIN: 3, records.VALIDATION: 2}
KINDS = {
    # kind: (format, stored size, DataConfig)
    'jpeg': ('JPEG', 24, config_lib.DataConfig(crop_size=20, shuffle_buffer=64)),
    'png': ('PNG', 12, config_lib.DataConfig(crop_size=12, pad=2, cache_decoded=True,
                                             shuffle_buffer=64)),
}


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
    encoded = [references.encode(p, fmt) for p in pixels]
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


def make(directory, data_config, split=records.TRAIN, batch_size=8, training=True, **kwargs):
  """make_dataset over a freshly opened directory."""
  source = input_pipeline.open_dataset(directory, data_config, training=training)
  return input_pipeline.make_dataset(source, split, data_config, batch_size, training, **kwargs)


def deferred_batches(directory, data_config, batch_size, seed, limit):
  """The first `limit` uint8 batches of training, as NumPy, and the pipeline."""
  source = input_pipeline.open_dataset(directory, data_config, training=True)
  pipeline = input_pipeline.TrainingPipeline(source, data_config, seed)
  ds = pipeline.deferred(records.TRAIN, batch_size, None, True)
  return [({k: v.numpy() for k, v in features.items()}, labels.numpy())
          for features, labels in ds.take(limit)], pipeline


def check_windows(batches, stored, data_config):
  """Each uint8 image of deferred batches is its example's window at crop_offset of the
  zero-padded stored image, mirrored where flip."""
  pad, crop = data_config.pad, data_config.crop_size
  for features, labels in batches:
    flips = features.get('flip', np.zeros(len(labels), bool))
    for image, label, (y, x), flip in zip(features['image'], labels, features['crop_offset'],
                                          flips):
      padded = np.pad(stored[label], [(pad, pad), (pad, pad), (0, 0)])
      window = padded[y:y + crop, x:x + crop]
      np.testing.assert_array_equal(image, window[:, ::-1] if flip else window)


def test_eval_reads_each_example_once_in_file_order(dataset):
  _, directory, data_config, decoded = dataset
  images, labels = collect(make(directory, data_config, records.VALIDATION, 4, training=False))
  assert [len(b) for b in labels] == [4, 4, 4, 1]  # the partial batch is kept
  np.testing.assert_array_equal(np.concatenate(labels), np.arange(COUNTS[records.VALIDATION]))
  mean = records.read_mean_image(directory)
  for got, stored in zip(np.concatenate(images), decoded[records.VALIDATION]):
    want = references.eval_image(stored, mean, data_config.crop_size, data_config.pad)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ten_crop_eval(dataset):
  _, directory, data_config, decoded = dataset
  crop = data_config.crop_size
  ten = collect(make(directory, data_config, records.VALIDATION, 5, False, ten_crop=True))
  images, labels = np.concatenate(ten[0]), np.concatenate(ten[1])
  assert ten[0][0].shape == (5, 10, crop, crop, 3) and images.dtype == np.float32
  mean = records.read_mean_image(directory)
  for got, label in zip(images, labels):
    want = references.eval_image(decoded[records.VALIDATION][label], mean, crop,
                                 data_config.pad, ten_crop=True)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_evaluation_subtracts_the_mean_it_is_given(dataset):
  # A model evaluated on other data keeps its own training mean.
  _, directory, data_config, decoded = dataset
  mean = np.full(records.read_mean_image(directory).shape, 100.0, np.float32)
  source = input_pipeline.open_dataset(directory, data_config, mean=mean)
  ds = input_pipeline.make_dataset(source, records.VALIDATION, data_config, 13, False)
  (images,), _ = collect(ds)
  for got, stored in zip(images, decoded[records.VALIDATION]):
    want = references.eval_image(stored, mean, data_config.crop_size, data_config.pad)
    np.testing.assert_allclose(got, want, atol=1e-4)
  with pytest.raises(ValueError, match=re.escape(f'needs a mean of shape {list(mean.shape)}, '
                                                 f'got [3]')):
    input_pipeline.open_dataset(directory, data_config, mean=np.zeros(3, np.float32))


def test_training_batches(dataset):
  _, directory, data_config, _ = dataset
  crop = data_config.crop_size
  ds = make(directory, data_config, seed=3)
  features, labels = ds.element_spec
  assert features['image'].shape.as_list() == [8, crop, crop, 3]  # static: drop_remainder
  assert features['image'].dtype == tf.float32 and labels.dtype == tf.int32
  images, labels = collect(ds, limit=6)  # 48 > 30 examples: repeats by default
  assert all(b.shape == (8, crop, crop, 3) for b in images)
  assert all(np.isfinite(b).all() for b in images)


def test_training_epoch_is_a_shuffled_permutation(dataset):
  _, directory, data_config, _ = dataset
  ds = make(directory, data_config, batch_size=7, num_epochs=2, seed=1, drop_remainder=False)
  labels = np.concatenate(collect(ds)[1])
  count = COUNTS[records.TRAIN]
  assert len(labels) == 2 * count
  for epoch in (labels[:count], labels[count:]):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(count))
  assert not np.array_equal(labels[:count], np.arange(count))
  assert not np.array_equal(labels[:count], labels[count:])  # reshuffled every epoch


def test_training_images_are_augmented_crops_of_their_example(dataset):
  # The float batches against the NumPy reference, for the choices the pipeline drew.
  _, directory, data_config, decoded = dataset
  batches, pipeline = deferred_batches(directory, data_config, 10, seed=5, limit=2)
  floats = collect(make(directory, data_config, batch_size=10, seed=5), limit=2)[0]
  mean, stats = records.read_mean_image(directory), pipeline.source.metadata.color_stats
  seen_flips = set()
  for (features, labels), images in zip(batches, floats):
    for i, label in enumerate(labels):
      shift = references.lighting(features['lighting_alpha'][i], stats.eigenvalues,
                                  stats.eigenvectors)
      want = references.train_image(decoded[records.TRAIN][label], mean,
                                    features['crop_offset'][i], features['flip'][i], shift,
                                    data_config.crop_size, data_config.pad)
      np.testing.assert_allclose(images[i], want, rtol=1e-5, atol=1e-3)
      seen_flips.add(bool(features['flip'][i]))
  assert seen_flips == {False, True}
  check_windows(batches, decoded[records.TRAIN], data_config)


def test_lighting_shifts_each_image_by_one_colour(dataset):
  _, directory, data_config, _ = dataset
  runs = [collect(make(directory, dataclasses.replace(data_config, pca_lighting_std=std),
                       seed=2), limit=1)[0][0] for std in (0.0, 0.1)]
  shift = runs[1] - runs[0]  # same seed: same crops and mirrors, only the lighting differs
  per_image = shift.reshape(8, -1, 3)
  np.testing.assert_allclose(per_image, per_image[:, :1, :].repeat(per_image.shape[1], 1),
                             atol=1e-3)
  assert np.abs(per_image[:, 0]).max() > 0.1


def test_seeded_training_is_reproducible_in_eager_and_graph_mode(dataset):
  _, directory, data_config, _ = dataset

  def first_batches(seed):
    return collect(make(directory, data_config, batch_size=6, seed=seed), limit=3)

  (a_images, a_labels), (b_images, b_labels) = first_batches(11), first_batches(11)
  np.testing.assert_array_equal(np.concatenate(a_labels), np.concatenate(b_labels))
  np.testing.assert_array_equal(np.concatenate(a_images), np.concatenate(b_images))
  c_images, _ = first_batches(12)
  assert not np.array_equal(np.concatenate(a_images), np.concatenate(c_images))
  # The Estimator calls the same input_fn inside a graph, under /cpu:0; it finishes the
  # uint8 batches in the graph.
  source = input_pipeline.open_dataset(directory, data_config, training=True)
  input_fn = input_pipeline.make_input_fn(source, records.TRAIN, data_config, 6,
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
  # Bit for bit on the development machine; the tolerance allows another CPU's kernels to
  # round the lighting add differently inside tf.data and inside the graph.
  np.testing.assert_allclose(np.concatenate([g[0]['image'] for g in graph]),
                             np.concatenate(a_images), rtol=0, atol=1e-4)


@pytest.mark.parametrize('cache_decoded', [False, True])
def test_deferred_form_is_uint8_crops_that_finish_to_the_float_batches(dataset, cache_decoded):
  _, directory, data_config, decoded = dataset
  data_config = dataclasses.replace(data_config, cache_decoded=cache_decoded)
  batches, pipeline = deferred_batches(directory, data_config, 6, seed=4, limit=3)
  crop = data_config.crop_size
  features_spec, _ = pipeline.deferred(records.TRAIN, 6, None, True).element_spec
  assert {k: (s.dtype, s.shape.as_list()) for k, s in features_spec.items()} == {
      'image': (tf.uint8, [6, crop, crop, 3]), 'crop_offset': (tf.int32, [6, 2]),
      'flip': (tf.bool, [6]), 'lighting_alpha': (tf.float32, [6, 3])}
  floats = make(directory, data_config, batch_size=6, seed=4).take(3)
  for (features, labels), (want, want_labels) in zip(batches, floats):
    np.testing.assert_array_equal(labels, want_labels)
    got = pipeline.finish({k: tf.constant(v) for k, v in features.items()})['image']
    np.testing.assert_allclose(got, want['image'], rtol=0, atol=1e-4)
  check_windows(batches, decoded[records.TRAIN], data_config)


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
  source = input_pipeline.open_dataset(directory, data_config, training=True)
  estimator.train(input_pipeline.make_input_fn(source, records.TRAIN, data_config, 4,
                                               training=True, seed=1), max_steps=3)
  assert seen == [(tf.float32, [4, crop, crop, 3], tf.int32)]
  assert estimator.get_variable_value('global_step') == 3


def test_a_dataset_is_checked_against_the_config_where_it_is_opened(tmp_path):
  directory = str(tmp_path)
  write_dataset(directory, 'JPEG', 24, with_mean=False)
  data_config = KINDS['jpeg'][2]
  open_dataset = input_pipeline.open_dataset
  with pytest.raises(ValueError, match='mean_image.npy'):
    open_dataset(directory, data_config)
  rgb = dataclasses.replace(data_config, subtract_mean='rgb')
  assert open_dataset(directory, rgb).mean.shape == (3,)
  with pytest.raises(ValueError, match='smaller than the crop size 25'):
    open_dataset(directory, dataclasses.replace(rgb, crop_size=25))
  np.save(os.path.join(directory, records.MEAN_IMAGE_FILE), np.zeros((20, 24, 3), np.float32))
  with pytest.raises(ValueError, match=r'needs a mean of shape \[24, 24, 3\], got \[20, 24, 3\]'):
    open_dataset(directory, data_config)
  metadata = records.read_metadata(directory)
  records.write_metadata(directory, dataclasses.replace(metadata, color_stats=None))
  assert open_dataset(directory, dataclasses.replace(rgb, subtract_mean='none'))
  with pytest.raises(ValueError, match='PCA lighting needs the colour statistics'):
    open_dataset(directory, dataclasses.replace(rgb, subtract_mean='none'), training=True)
  records.write_metadata(directory, dataclasses.replace(metadata, image_size=None))
  with pytest.raises(ValueError, match='different sizes, which padding needs to be one'):
    open_dataset(directory, dataclasses.replace(rgb, pad=2))
  with pytest.raises(FileNotFoundError, match='no TFRecord shards'):
    make(directory, rgb, records.TEST, 4, training=False)


def test_training_choices_are_blocks_drawn_from_the_seed(dataset):
  _, directory, data_config, _ = dataset
  block = input_pipeline.PLAN_BLOCK
  batches, pipeline = deferred_batches(directory, data_config, 6, seed=3, limit=-(-block // 6) + 1)
  flips = np.concatenate([f['flip'] for f, _ in batches])
  alphas = np.concatenate([f['lighting_alpha'] for f, _ in batches])
  for k in (0, 1):  # the rows of two blocks, as one draw of each gives them
    want = pipeline.augmentation.draw(tf.constant([3, k], tf.int64), block)
    rows = slice(k * block, min((k + 1) * block, len(flips)))
    np.testing.assert_array_equal(flips[rows], want.flip[:rows.stop - rows.start])
    np.testing.assert_array_equal(alphas[rows], want.alpha[:rows.stop - rows.start])


def test_training_crops_cover_every_position_uniformly(dataset):
  _, directory, data_config, decoded = dataset
  batches, _ = deferred_batches(directory, data_config, 30, seed=8, limit=40)
  offsets = np.concatenate([f['crop_offset'] for f, _ in batches])
  size = decoded[records.TRAIN].shape[1] + 2 * data_config.pad
  positions = size - data_config.crop_size + 1
  for axis in (0, 1):
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions
    assert counts.min() > len(offsets) / positions * 0.8, counts
    assert counts.max() < len(offsets) / positions * 1.2, counts
  flips = np.concatenate([f['flip'] for f, _ in batches])
  assert 0.45 < flips.mean() < 0.55
  check_windows(batches[:4], decoded[records.TRAIN], data_config)  # all 1200 would be slow
  again, _ = deferred_batches(directory, data_config, 30, seed=8, limit=4)
  for (a, a_labels), (b, b_labels) in zip(batches[:4], again):
    np.testing.assert_array_equal(a_labels, b_labels)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize('cache_decoded', [False, True])
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_stored_images_of_different_sizes(tmp_path, fmt, cache_decoded):
  # Without DatasetMetadata.image_size each window is placed within its own image's size.
  directory = str(tmp_path)
  decoded = write_dataset(directory, fmt, 24, with_mean=False)
  metadata = records.read_metadata(directory)
  records.write_metadata(directory, dataclasses.replace(metadata, image_size=None))
  data_config = dataclasses.replace(KINDS['jpeg'][2], subtract_mean='rgb',
                                    cache_decoded=cache_decoded)
  batches, pipeline = deferred_batches(directory, data_config, 6, seed=2, limit=3)
  check_windows(batches, decoded[records.TRAIN], data_config)
  again, _ = deferred_batches(directory, data_config, 6, seed=2, limit=3)
  for (a, _), (b, _) in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  floats = make(directory, data_config, batch_size=6, seed=2).take(3)
  for (features, labels), (want, want_labels) in zip(batches, floats):
    np.testing.assert_array_equal(labels, want_labels)
    got = pipeline.finish({k: tf.constant(v) for k, v in features.items()})['image']
    np.testing.assert_allclose(got, want['image'], rtol=0, atol=1e-4)
  (images,), _ = collect(make(directory, data_config, records.VALIDATION, 13, False))
  for got, stored in zip(images, decoded[records.VALIDATION]):
    np.testing.assert_allclose(got, references.eval_image(stored, pipeline.source.mean, 20),
                               atol=1e-4)
