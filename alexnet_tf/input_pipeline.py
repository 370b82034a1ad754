"""tf.data input pipelines over converted TFRecord shards (the format of `records`).

`make_dataset` returns a `tf.data.Dataset` of `({'image': images}, labels)` for the
Estimator, usable eagerly and from `tf.compat.v1` graphs:

  training, pad == 0 (ImageNet)   shard files shuffled and read interleaved -> shuffle of the
                                  serialized examples -> repeat -> zipped with the random
                                  choices (window, flip, lighting alphas), drawn for blocks
                                  of PLAN_BLOCK images (`crop_plans`) -> per example,
                                  integers only: decode only the window (fused
                                  decode_and_crop_jpeg), mirror the uint8 crop
                                  (`preprocessing.decode_planned_crop`; with cache_decoded
                                  the cached images are cut by `train_crop_with`) -> batch
                                  of uint8 crops + params -> [float stage] -> prefetch.
                                  Stored images of unknown size (no
                                  DatasetMetadata.image_size) draw per example from their
                                  own size (`decode_train_crop`, `train_crop`).
  training, pad > 0 (CIFAR-10)    ... -> decode (kept in memory with cache_decoded) -> shuffle
                                  -> repeat -> batch of uint8 images -> the augmentation on the
                                  whole batch (`preprocessing.augment_batch`) -> prefetch
  evaluation                      shards in order, one pass -> decode -> minus the mean -> pad
                                  -> centre crop or ten crops -> batch (last one partial)

images are float32 [batch, crop, crop, 3] RGB on 0-255 minus the mean, or
[batch, 10, crop, crop, 3] for ten-crop evaluation; labels int32 [batch].

The float stage of pad == 0 training (`preprocessing.finish_train_batch`: float32, minus the
mean cut at each window, plus the lighting shift, for a whole batch) is where it runs:

  make_dataset(training=True)                    mapped over the batches in tf.data, so the
                                                 dataset keeps its float32 contract
  make_dataset(training=True, defer_float=True)  left out: elements are the deferred form
                                                 ({'image': uint8 [batch, crop, crop, 3],
                                                 'crop_offset': int32 [batch, 2], 'flip':
                                                 bool [batch], 'lighting_alpha': float32
                                                 [batch, 3]}, labels), finished by
                                                 `make_finish_fn(data_dir, data_config)`
  make_input_fn(training=True)                   the deferred form from a one-shot iterator,
                                                 finished in the graph: the float work runs
                                                 in the training step's session.run, on the
                                                 net's device, and tf.data batches and
                                                 prefetches a quarter of the bytes

Without a GPU the float stage is moved, not saved: on the 2-core development machine the
training step spends ~0.4 ms of CPU per 227x227 image on it, where tf.data spent ~0.3 ms
(`benchmarks/bench_input_pipeline.py` measures both).

Randomness: every block of PLAN_BLOCK examples (stored size known, pad == 0), every
example (size unknown) or every batch (whole-batch augmentation) gets the stateless seed
(seed, n), where n counts what the pipeline has produced over all epochs, so a seeded
pipeline gives the same batches every time regardless of the parallelism; unseeded pipelines
draw a random `seed` and let the parallel stages deliver out of order for speed. A caller
that rebuilds the pipeline after every evaluation must change the seed each time, or it
will replay the same batches.
"""

import functools
import secrets
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import preprocessing
from alexnet_tf import records

AUTOTUNE = tf.data.AUTOTUNE

# Feature keys. IMAGE is what the model reads; the others carry the deferred training form's
# per-image random choices (`preprocessing.TrainParams`).
IMAGE = 'image'
CROP_OFFSET = 'crop_offset'
FLIP = 'flip'
LIGHTING_ALPHA = 'lighting_alpha'

# What an Estimator input_fn may return: a dataset, or (features, labels) tensors.
InputFnResult = Union[tf.data.Dataset, Tuple[Dict[str, tf.Tensor], tf.Tensor]]

_FEATURES = {
    records.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    records.LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def parse_example(serialized: tf.Tensor):
  """A serialized `tf.train.Example` -> (encoded image bytes, int32 label)."""
  features = tf.io.parse_single_example(serialized, _FEATURES)
  return features[records.IMAGE_ENCODED], tf.cast(features[records.LABEL], tf.int32)


def load_mean(data_dir: str, data_config: config_lib.DataConfig,
              metadata: Optional[records.DatasetMetadata] = None) -> Optional[np.ndarray]:
  """The mean that DataConfig.subtract_mean asks for, checked against the dataset.

  Returns:
    float32 [height, width, 3] for 'pixel' (mean_image.npy), [3] for 'rgb'
    (ColorStats.mean_rgb), None for 'none'.

  Raises:
    ValueError: the mean is missing, or its size is not the stored image size.
  """
  preprocessing.check_data_config(data_config)
  metadata = metadata or records.read_metadata(data_dir)
  mode = data_config.subtract_mean
  if mode == 'none':
    return None
  if mode == 'rgb':
    if metadata.color_stats is None:
      raise ValueError(f'{data_dir}: subtract_mean="rgb" needs the colour statistics in '
                       f'{records.METADATA_FILE}, which has none; re-convert the dataset or '
                       f'use subtract_mean="none"')
    return np.asarray(metadata.color_stats.mean_rgb, np.float32)
  mean = records.read_mean_image(data_dir)
  if mean is None:
    raise ValueError(f'{data_dir}: subtract_mean="pixel" needs {records.MEAN_IMAGE_FILE}, '
                     f'which is missing (the converter writes it only when all stored images '
                     f'share one size); use subtract_mean="rgb"')
  if mean.ndim != 3 or mean.shape[2] != 3:
    raise ValueError(f'{data_dir}/{records.MEAN_IMAGE_FILE}: expected [height, width, 3], got '
                     f'shape {list(mean.shape)}')
  if metadata.image_size is None or tuple(metadata.image_size) != mean.shape[:2]:
    raise ValueError(f'{data_dir}/{records.MEAN_IMAGE_FILE} is {list(mean.shape[:2])} but the '
                     f'stored images are {metadata.image_size}: the per-pixel mean needs '
                     f'images of its size; re-convert the dataset or use subtract_mean="rgb"')
  return mean


def _check_image_size(metadata: records.DatasetMetadata, data_config, data_dir: str) -> None:
  if metadata.image_size is None:
    return  # checked per image at run time
  height, width = metadata.image_size
  padded = min(height, width) + 2 * data_config.pad
  if padded < data_config.crop_size:
    raise ValueError(f'{data_dir}: the stored images are {height}x{width}' +
                     (f' (+{data_config.pad} padding)' if data_config.pad else '') +
                     f', smaller than the crop size {data_config.crop_size}; convert the '
                     f'dataset at a larger size or lower DataConfig.crop_size')


def make_dataset(data_dir: str, split: str, data_config: config_lib.DataConfig,
                 batch_size: int, training: bool, *, num_epochs: Optional[int] = None,
                 ten_crop: bool = False, seed: Optional[int] = None,
                 drop_remainder: Optional[bool] = None,
                 defer_float: bool = False) -> tf.data.Dataset:
  """Batches of preprocessed images and labels from the shards of `split`.

  Args:
    data_dir: a converted dataset (shards, dataset.json, mean_image.npy for 'pixel').
    split: 'train', 'validation' or 'test'.
    data_config: crop/pad/flip/lighting/mean settings, shuffle buffer, cycle length, cache.
    batch_size: examples per batch.
    training: random augmentation, shuffled and repeated; else the deterministic eval input.
    num_epochs: training: passes over the data (None: forever). Evaluation: None or 1.
    ten_crop: evaluation only: images [batch, 10, crop, crop, 3] (`preprocessing.ten_crops`).
    seed: makes training reproducible (same batches every time); None: random.
    drop_remainder: drop a last partial batch; default True for training, False for eval.
    defer_float: training with DataConfig.pad == 0 only: leave out the float stage and
      deliver the deferred form (see the module docstring), to be finished by
      `make_finish_fn(data_dir, data_config)` where the net runs (`make_input_fn` does that).

  Returns:
    A dataset of ({'image': float32 [batch, crop, crop, 3] or [batch, 10, crop, crop, 3]},
    int32 labels [batch]); with defer_float, of ({'image': uint8 [batch, crop, crop, 3],
    'crop_offset': int32 [batch, 2], 'flip': bool [batch] (if DataConfig.random_flip),
    'lighting_alpha': float32 [batch, 3] (if DataConfig.pca_lighting_std > 0)}, labels).
  """
  preprocessing.check_data_config(data_config)
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if training and ten_crop:
    raise ValueError('ten_crop is a test-time procedure; use it with training=False')
  if not training and num_epochs not in (None, 1):
    raise ValueError(f'evaluation reads the split exactly once; got num_epochs={num_epochs}')
  if defer_float and not (training and defers_float(data_config)):
    raise ValueError(f'defer_float: the uint8 form exists for training with DataConfig.pad '
                     f'== 0 only (got training={training}, pad={data_config.pad}); padded '
                     f'images are augmented as whole float batches')
  metadata = records.read_metadata(data_dir)
  _check_image_size(metadata, data_config, data_dir)
  mean = load_mean(data_dir, data_config, metadata)
  files = records.shard_files(data_dir, split)
  if drop_remainder is None:
    drop_remainder = training
  if training:
    color_stats = metadata.color_stats
    if data_config.pca_lighting_std > 0 and color_stats is None:
      raise ValueError(f'{data_dir}: PCA lighting needs the colour statistics in '
                       f'{records.METADATA_FILE}, which has none; set pca_lighting_std=0')
    dataset = _training_dataset(files, metadata, mean, color_stats, data_config, batch_size,
                                num_epochs, seed, drop_remainder)
    if defers_float(data_config) and not defer_float:
      finish = functools.partial(_finish_features, mean=mean, color_stats=color_stats)
      dataset = dataset.map(lambda features, labels: (finish(features), labels),
                            num_parallel_calls=AUTOTUNE, deterministic=seed is not None)
  else:
    dataset = _eval_dataset(files, metadata, mean, data_config, batch_size, ten_crop,
                            drop_remainder)
    dataset = dataset.map(lambda images, labels: ({IMAGE: images}, labels))
  dataset = dataset.prefetch(AUTOTUNE)
  options = tf.data.Options()
  # The per-image ops are small and the map already runs one image per core: letting each
  # op split its work over the intra-op threads as well measured ~10% slower.
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def defers_float(data_config: config_lib.DataConfig) -> bool:
  """Whether training has a deferred (uint8 + params) form: pad == 0, crops cut per image."""
  return data_config.pad == 0


def make_finish_fn(data_dir: str, data_config: config_lib.DataConfig,
                   metadata: Optional[records.DatasetMetadata] = None
                   ) -> Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]:
  """The float stage of the deferred training form, with the dataset's mean and colours.

  Returns:
    A function: the features of `make_dataset(..., defer_float=True)` ->
    {'image': float32 [batch, crop, crop, 3]}, the features `make_dataset` gives without
    defer_float (`preprocessing.finish_train_batch`). Graph mode or eager.
  """
  metadata = metadata or records.read_metadata(data_dir)
  mean = load_mean(data_dir, data_config, metadata)
  return functools.partial(_finish_features, mean=mean, color_stats=metadata.color_stats)


def _finish_features(features, mean, color_stats):
  params = preprocessing.TrainParams(features[CROP_OFFSET], features.get(FLIP),
                                     features.get(LIGHTING_ALPHA))
  return {IMAGE: preprocessing.finish_train_batch(features[IMAGE], params, mean, color_stats)}


def _deferred_features(crop, params: preprocessing.TrainParams):
  features = {IMAGE: crop, CROP_OFFSET: params.offset}
  if params.flip is not None:
    features[FLIP] = params.flip
  if params.alpha is not None:
    features[LIGHTING_ALPHA] = params.alpha
  return features


def make_input_fn(data_dir: str, split: str, data_config: config_lib.DataConfig,
                  batch_size: int, training: bool, **kwargs) -> Callable[[], InputFnResult]:
  """An Estimator `input_fn` (no arguments); `kwargs` go to `make_dataset`.

  Evaluation: the input_fn returns `make_dataset(...)`.
  Training: it returns the (features, labels) tensors of the next batch of a one-shot
  iterator over the dataset, features {'image': float32 [batch, crop, crop, 3]} as
  `make_dataset` delivers them. With pad == 0 the iterator delivers the deferred uint8 form
  and the float stage (`make_finish_fn`) is built on its tensors, in the graph, so it runs
  inside the training step's session.run (on the net's device) instead of in tf.data
  threads.
  """
  def input_fn():
    if not training:
      return make_dataset(data_dir, split, data_config, batch_size, training, **kwargs)
    deferred = defers_float(data_config)
    dataset = make_dataset(data_dir, split, data_config, batch_size, training,
                           defer_float=deferred, **kwargs)
    features, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    if deferred:
      # The Estimator calls input_fn under tf.device('/cpu:0'), which the iterator needs;
      # the float stage is the net's work, so the placer may put it with the net (a GPU).
      with tf.device(None):
        features = make_finish_fn(data_dir, data_config)(features)
    return features, labels
  return input_fn


def _training_dataset(files, metadata, mean, color_stats, data_config, batch_size, num_epochs,
                      seed, drop_remainder) -> tf.data.Dataset:
  """(features, labels) batches: float {'image'} for pad > 0, the deferred form for pad == 0."""
  deterministic = seed is not None
  if seed is None:
    seed = secrets.randbits(62)
  seed = int(seed)

  def example_seed(n):
    return tf.stack([tf.constant(seed, tf.int64), n])

  stored_size = metadata.image_size
  # Whole-batch augmentation needs equally sized stored images; it is what small images
  # want (per-op overhead dominates), while large ones decode just the crop per example.
  batched = data_config.pad > 0 and stored_size is not None
  # Padding needs the whole image; a cache must hold whole images to crop them anew.
  decode_first = data_config.cache_decoded or data_config.pad > 0

  dataset = tf.data.Dataset.from_tensor_slices(files)
  dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.interleave(tf.data.TFRecordDataset,
                               cycle_length=min(data_config.cycle_length, len(files)),
                               num_parallel_calls=AUTOTUNE, deterministic=deterministic)

  if decode_first:
    def decode(serialized):
      encoded, label = parse_example(serialized)
      image = preprocessing.decode_image(encoded)
      if stored_size is not None:
        image.set_shape(list(stored_size) + [3])
      return image, label

    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if data_config.cache_decoded:
      dataset = dataset.cache()
  dataset = dataset.shuffle(data_config.shuffle_buffer, seed=seed,
                            reshuffle_each_iteration=True)
  dataset = dataset.repeat(num_epochs)

  if batched:
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def augment(n, batch):
      images, labels = batch
      return {IMAGE: preprocessing.augment_batch(images, mean, color_stats, data_config,
                                                 example_seed(n))}, labels

    # enumerate() numbers the elements for their seeds (cheaper than a zip with a counter).
    return dataset.enumerate().map(augment, num_parallel_calls=AUTOTUNE,
                                   deterministic=deterministic)

  if data_config.pad > 0:
    def preprocess(n, example):
      image, label = example
      return {IMAGE: preprocessing.preprocess_for_train(image, mean, color_stats, data_config,
                                                        example_seed(n))}, label
  elif stored_size is not None:
    # The random choices come drawn for blocks of images and are zipped with the examples,
    # so the per-image map is left with parsing, the decode and the mirror: drawing them per
    # image took a dozen small ops (~100 us of CPU per image, a sixth of the decode).
    return _planned_training_dataset(dataset, seed, stored_size, mean, data_config,
                                     batch_size, decode_first, deterministic, drop_remainder)
  elif decode_first:
    def preprocess(n, example):
      image, label = example
      crop, params = preprocessing.train_crop(image, data_config, example_seed(n), mean)
      return _deferred_features(crop, params), label
  else:
    def preprocess(n, serialized):
      # Stored images of different sizes: each image's choices depend on its size.
      encoded, label = parse_example(serialized)
      crop, params = preprocessing.decode_train_crop(encoded, data_config, example_seed(n),
                                                     mean)
      return _deferred_features(crop, params), label

  dataset = dataset.enumerate().map(preprocess, num_parallel_calls=AUTOTUNE,
                                    deterministic=deterministic)
  return dataset.batch(batch_size, drop_remainder=drop_remainder)


# Images per draw of the random training choices (`crop_plans`).
PLAN_BLOCK = 256


def crop_plans(seed: int, stored_size, data_config: config_lib.DataConfig,
               mean=None) -> tf.data.Dataset:
  """The endless per-image random choices of training (pad == 0) for images of stored_size.

  Block k of PLAN_BLOCK images is drawn at once from the stateless seed (seed, k)
  (`preprocessing.plan_train_crops`) and unbatched: element n holds image n's choices.

  Returns:
    A dataset of dicts: 'crop_offset' int32 [2], 'flip' bool [] (if random_flip),
    'lighting_alpha' float32 [3] (if pca_lighting_std > 0), 'jpeg_window' int32 [4],
    'jpeg_begin' int32 [3].
  """
  def plan_block(k):
    plan = preprocessing.plan_train_crops(tf.stack([tf.constant(seed, tf.int64), k]),
                                          stored_size, data_config, PLAN_BLOCK, mean)
    features = _deferred_features(None, plan.params)
    del features[IMAGE]
    features.update(jpeg_window=plan.jpeg_window, jpeg_begin=plan.jpeg_begin)
    return features

  blocks = tf.data.Dataset.range(np.iinfo(np.int64).max).map(plan_block)
  return blocks.unbatch()


def _plan_of(features) -> preprocessing.CropPlan:
  """A `crop_plans` element as the CropPlan it came from."""
  params = preprocessing.TrainParams(features[CROP_OFFSET], features.get(FLIP),
                                     features.get(LIGHTING_ALPHA))
  return preprocessing.CropPlan(params, features['jpeg_window'], features['jpeg_begin'])


def _planned_training_dataset(dataset, seed, stored_size, mean, data_config, batch_size,
                              decode_first, deterministic, drop_remainder) -> tf.data.Dataset:
  """Examples (serialized, or decoded (image, label)) zipped with their `crop_plans` ->
  the deferred form, batched."""
  crop_size = data_config.crop_size

  def preprocess(example, plan_features):
    plan = _plan_of(plan_features)
    if decode_first:
      image, label = example
      crop = preprocessing.train_crop_with(image, plan.params, crop_size)
    else:
      encoded, label = parse_example(example)
      crop = preprocessing.decode_planned_crop(encoded, plan, crop_size)
    return _deferred_features(crop, plan.params), label

  dataset = tf.data.Dataset.zip((dataset, crop_plans(seed, stored_size, data_config, mean)))
  dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  return dataset.batch(batch_size, drop_remainder=drop_remainder)


def _eval_dataset(files, metadata, mean, data_config, batch_size, ten_crop,
                  drop_remainder) -> tf.data.Dataset:
  stored_size = metadata.image_size

  def preprocess(serialized):
    encoded, label = parse_example(serialized)
    image = preprocessing.decode_image(encoded)
    if stored_size is not None:
      image.set_shape(list(stored_size) + [3])
    return preprocessing.preprocess_for_eval(image, mean, data_config, ten_crop), label

  # Shards in file order, one after the other: the order of the examples on disk.
  dataset = tf.data.TFRecordDataset(files)
  dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size, drop_remainder=drop_remainder)
