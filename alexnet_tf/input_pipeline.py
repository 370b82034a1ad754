"""tf.data input pipelines over converted TFRecord shards (the format of `records`).

A dataset directory is checked against the DataConfig once, where it is opened
(`open_dataset`); the pipelines below trust what it returns.

Training (shuffled, repeated, augmented: `augment`):

  shards shuffled, read interleaved -> [decode, cache: cache_decoded or pad > 0] -> shuffle
  -> repeat -> zipped with the random choices, drawn for blocks of PLAN_BLOCK images ->
  cut the uint8 windows -> batch -> [float finish] -> prefetch

  The cut runs per image (only the window of a JPEG is decoded) or, for padded images, per
  batch (two gathers); which one is decided once from the config. The float finish (minus the
  mean, plus the lighting shift) runs where the net runs: `make_input_fn` builds it on the
  iterator's uint8 tensors inside the training step, so tf.data hands over a quarter of the
  bytes; `make_dataset` maps it over the batches for callers that want float batches.

Evaluation: shards in file order, one pass -> decode -> minus the mean -> pad -> centre crop
or ten crops (`eval_crops`) -> batch, the last one partial.

Features are {'image': float32 [batch, crop, crop, 3]} (ten crops: [batch, 10, crop, crop,
3]), RGB on 0-255 minus the mean; labels int32 [batch].

Randomness: block k of the training choices comes from the stateless seed (seed, k), so a
seeded pipeline gives the same batches every time whatever the parallelism; an unseeded one
draws a random seed and lets parallel stages deliver out of order. A caller that rebuilds
the pipeline must change the seed, or it replays the same batches.
"""

import dataclasses
import os
import re
import secrets
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from alexnet_tf import decoding, eval_crops, records
from alexnet_tf.augment import Augmentation, Choices
from alexnet_tf.config import DataConfig

AUTOTUNE = tf.data.AUTOTUNE
IMAGE = 'image'  # the feature the model reads
# The deferred training form's other features: what the float finish needs per image.
CROP_OFFSET = 'crop_offset'
FLIP = 'flip'
LIGHTING_ALPHA = 'lighting_alpha'
PLAN_BLOCK = 256  # images per draw of the random training choices

InputFnResult = Union[tf.data.Dataset, Tuple[Dict[str, tf.Tensor], tf.Tensor]]

_FEATURES = {
    records.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    records.LABEL: tf.io.FixedLenFeature([], tf.int64),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A converted dataset, checked against a DataConfig by `open_dataset`."""
  data_dir: str
  metadata: records.DatasetMetadata
  mean: Optional[np.ndarray]  # what is subtracted: None, [3] or [H, W, 3] of the stored size

  @property
  def stored_size(self) -> Optional[Tuple[int, int]]:
    return None if self.metadata.image_size is None else tuple(self.metadata.image_size)


def dataset_mean(data_dir: str, data_config: DataConfig,
                 metadata: records.DatasetMetadata) -> Optional[np.ndarray]:
  """The mean of `data_dir` that DataConfig.subtract_mean names: None ('none'), [3] ('rgb',
  ColorStats.mean_rgb, or the config's fixed mean_rgb) or [H, W, 3] ('pixel',
  mean_image.npy); ValueError if it has none."""
  mode = data_config.subtract_mean
  if mode == 'none':
    return None
  if data_config.mean_rgb is not None:  # pretrained weights keep the mean they learned with
    return np.asarray(data_config.mean_rgb, np.float32)
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
  return mean


def open_dataset(data_dir: str, data_config: DataConfig, *, training: bool = False,
                 mean: Optional[np.ndarray] = None) -> Source:
  """Reads `data_dir`'s metadata and checks it against `data_config`, once.

  Args:
    training: also check what only training needs (colour statistics for PCA lighting).
    mean: the mean the model was trained with, to subtract instead of this dataset's own
      (evaluating a model on other data must not change its input); None: the dataset's.

  Raises:
    ValueError naming the directory: images smaller than the crop, a mean of the wrong
    shape or missing, padding or a per-pixel mean over images of different sizes.
  """
  metadata = records.read_metadata(data_dir)
  size = metadata.image_size
  mode = data_config.subtract_mean
  if size is None and (data_config.pad or mode == 'pixel'):
    raise ValueError(f'{data_dir}: the stored images have different sizes, which '
                     f'{"padding" if data_config.pad else "a per-pixel mean"} needs to be one; '
                     f'convert with --resize or use subtract_mean="rgb" and pad=0')
  if size is not None and min(size) + 2 * data_config.pad < data_config.crop_size:
    raise ValueError(f'{data_dir}: the stored images are {size[0]}x{size[1]}' +
                     (f' (+{data_config.pad} padding)' if data_config.pad else '') +
                     f', smaller than the crop size {data_config.crop_size}; convert the '
                     f'dataset at a larger size or lower DataConfig.crop_size')
  if mean is None:
    mean = dataset_mean(data_dir, data_config, metadata)
  expected = {'none': None, 'rgb': (3,), 'pixel': None if size is None else (*size, 3)}[mode]
  if mean is not None and (mode == 'none' or tuple(mean.shape) != expected):
    raise ValueError(f'{data_dir}: subtract_mean={mode!r} needs a mean of shape '
                     f'{list(expected or ())}, got {list(mean.shape)}' +
                     ('' if mode == 'none' else '; re-convert the dataset or use '
                      'subtract_mean="rgb"'))
  if training and data_config.pca_lighting_std > 0 and metadata.color_stats is None:
    raise ValueError(f'{data_dir}: PCA lighting needs the colour statistics in '
                     f'{records.METADATA_FILE}, which has none; set pca_lighting_std=0')
  return Source(data_dir, metadata, None if mean is None else np.asarray(mean, np.float32))


def parse_example(serialized: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """A serialized `tf.train.Example` -> (encoded image bytes, int32 label)."""
  features = tf.io.parse_single_example(serialized, _FEATURES)
  return features[records.IMAGE_ENCODED], tf.cast(features[records.LABEL], tf.int32)


def make_dataset(source: Source, split: str, data_config: DataConfig, batch_size: int,
                 training: bool, *, num_epochs: Optional[int] = None, ten_crop: bool = False,
                 seed: Optional[int] = None,
                 drop_remainder: Optional[bool] = None,
                 shard: Tuple[int, int] = (1, 0)) -> tf.data.Dataset:
  """Batches ({'image': float32 images}, int32 labels) of `split` (see the module docstring).

  Args:
    source: `open_dataset(...)` (with training=True for training).
    training: augmented, shuffled and repeated `num_epochs` times (None: forever); else the
      deterministic evaluation input, one pass.
    ten_crop: evaluation only: images [batch, 10, crop, crop, 3].
    seed: makes training reproducible; None: random.
    drop_remainder: drop a last partial batch; default True for training, False otherwise.
    shard: (count, index): training reads only its 1/count of the split, the shards (or,
      with fewer shards than count, the examples) index, index + count, ... (one worker's
      part under tf.distribute).
  """
  if not training:
    return _finish_options(_eval_dataset(source, split, data_config, batch_size, ten_crop,
                                         bool(drop_remainder)))
  pipeline = TrainingPipeline(source, data_config, seed, shard)
  dataset = pipeline.deferred(split, batch_size, num_epochs, drop_remainder is not False)
  dataset = dataset.map(lambda features, labels: (pipeline.finish(features), labels),
                        num_parallel_calls=AUTOTUNE, deterministic=pipeline.deterministic)
  return _finish_options(dataset)


def make_input_fn(source: Source, split: str, data_config: DataConfig, batch_size: int,
                  training: bool, *, num_epochs: Optional[int] = None, ten_crop: bool = False,
                  seed: Optional[int] = None,
                  drop_remainder: Optional[bool] = None) -> Callable[[], InputFnResult]:
  """An Estimator `input_fn` of `make_dataset`'s batches (the same arguments).

  Training: the (features, labels) tensors of a one-shot iterator over the uint8 crops, with
  the float finish built on them in the graph: it runs inside the training step, on the
  net's device, and tf.data batches and prefetches a quarter of the bytes.
  """
  def input_fn():
    if not training:
      return make_dataset(source, split, data_config, batch_size, False, ten_crop=ten_crop,
                          drop_remainder=drop_remainder)
    pipeline = TrainingPipeline(source, data_config, seed)
    dataset = _finish_options(pipeline.deferred(split, batch_size, num_epochs,
                                                drop_remainder is not False))
    features, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    # The Estimator calls input_fn under tf.device('/cpu:0'), which the iterator needs; the
    # float finish is the net's work, so the placer may put it with the net (a GPU).
    with tf.device(None):
      return pipeline.finish(features), labels
  return input_fn


def make_distributed_input_fn(source: Source, split: str, data_config: DataConfig,
                              global_batch: int, training: bool, *,
                              seed: Optional[int] = None,
                              shard: Tuple[int, int] = (1, 0)) -> Callable[..., tf.data.Dataset]:
  """An Estimator `input_fn(input_context)` of `make_dataset`'s batches for tf.distribute.

  Under a strategy the Estimator passes a `tf.distribute.InputContext`: the dataset is this
  worker's shard (`input_pipeline_id` of `num_input_pipelines`) in per-replica batches of
  `global_batch // num_replicas_in_sync`, which the strategy hands to its replicas in turn.
  Without one (between-graph replication: no strategy object) it is `shard` (count, index)
  in batches of `global_batch`. A dataset, not tensors: strategies need one, so the float
  finish runs in tf.data here.
  """
  def input_fn(input_context=None):
    batch, pipelines = global_batch, shard
    if input_context is not None:
      batch = input_context.get_per_replica_batch_size(global_batch)
      pipelines = (input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
      return make_dataset(source, split, data_config, batch, True, seed=seed, shard=pipelines)
    return make_dataset(source, split, data_config, batch, False)
  return input_fn


class TrainingPipeline:
  """The training input of one dataset: the deferred uint8 batches and their float finish."""

  def __init__(self, source: Source, data_config: DataConfig, seed: Optional[int],
               shard: Tuple[int, int] = (1, 0)):
    self.source = source
    self.shard = shard  # (count, index): see make_dataset
    self.data_config = data_config
    self.deterministic = seed is not None
    self.seed = int(secrets.randbits(62) if seed is None else seed)
    self.augmentation = Augmentation.create(data_config, source.mean,
                                            source.metadata.color_stats, source.stored_size)

  def deferred(self, split: str, batch_size: int, num_epochs: Optional[int],
               drop_remainder: bool) -> tf.data.Dataset:
    """({'image': uint8 [batch, crop, crop, 3], 'crop_offset': int32 [batch, 2], 'flip': bool
    [batch] (random_flip), 'lighting_alpha': float32 [batch, 3] (lighting)}, labels)."""
    data, aug, deterministic = self.data_config, self.augmentation, self.deterministic
    # Padding needs the whole image; a cache must hold whole images to crop them anew.
    decoded = data.cache_decoded or data.pad > 0
    dataset = self._examples(split, decoded)
    dataset = dataset.shuffle(data.shuffle_buffer, seed=self.seed, reshuffle_each_iteration=True)
    dataset = tf.data.Dataset.zip((dataset.repeat(num_epochs), self._choices()))
    if data.pad > 0:  # tiny images: per-op overhead would dominate a per-image cut
      dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
      cut = lambda example, choices: (aug.cut_batch(example[0], choices), example[1], choices)
    elif decoded:
      cut = lambda example, choices: (aug.cut_image(example[0], choices), example[1], choices)
    else:
      def cut(serialized, choices):
        encoded, label = parse_example(serialized)
        return aug.decode_crop(encoded, choices), label, choices

    dataset = dataset.map(lambda example, choices: _deferred_features(
        *cut(example, Choices(**{name: choices.get(name) for name in Choices._fields}))),
                          num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if data.pad == 0:
      dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset

  def finish(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The deferred features -> {'image': float32 [batch, crop, crop, 3]}."""
    return {IMAGE: self.augmentation.finish(features[IMAGE], features[CROP_OFFSET],
                                            features.get(FLIP), features.get(LIGHTING_ALPHA))}

  def _examples(self, split: str, decoded: bool) -> tf.data.Dataset:
    """Serialized examples, or (uint8 image, label) pairs when `decoded` (cached if asked)."""
    files = records.shard_files(self.source.data_dir, split)
    count, index = self.shard
    if 1 < count <= len(files):  # whole shards per worker: each reads only its files
      files = files[index::count]
    elif count > 1:  # fewer shards than workers: every count-th example, in file order
      # (the same order on every worker, so the parts are disjoint)
      dataset = tf.data.TFRecordDataset(files).shard(count, index)
      return self._decoded(dataset) if decoded else dataset
    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.shuffle(len(files), seed=self.seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(self.data_config.cycle_length, len(files)),
        num_parallel_calls=AUTOTUNE, deterministic=self.deterministic)
    return self._decoded(dataset) if decoded else dataset

  def _decoded(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    dataset = dataset.map(lambda serialized: _decode(serialized, self.source.stored_size),
                          num_parallel_calls=AUTOTUNE, deterministic=self.deterministic)
    return dataset.cache() if self.data_config.cache_decoded else dataset

  def _choices(self) -> tf.data.Dataset:
    """The endless per-image Choices; block k drawn at once from the seed (seed, k)."""
    seed = tf.constant(self.seed, tf.int64)
    # Windows are placed ahead in stored images of one size, unless padding comes first.
    size = self.source.stored_size if self.data_config.pad == 0 else None

    def block(k):  # a dict: tf.data elements cannot hold the None of a disabled choice
      choices = self.augmentation.draw(tf.stack([seed, k]), PLAN_BLOCK, size)
      return {name: value for name, value in choices._asdict().items() if value is not None}

    return tf.data.Dataset.range(np.iinfo(np.int64).max).map(block).unbatch()


def _decode(serialized, stored_size):
  encoded, label = parse_example(serialized)
  image = decoding.decode_stored(encoded)
  if stored_size is not None:
    image.set_shape([*stored_size, 3])
  return image, label


def _deferred_features(cut, label, choices: Choices):
  crops, offsets = cut
  features = {IMAGE: crops, CROP_OFFSET: offsets}
  if choices.flip is not None:
    features[FLIP] = choices.flip
  if choices.alpha is not None:
    features[LIGHTING_ALPHA] = choices.alpha
  return features, label


def _eval_dataset(source: Source, split: str, data_config: DataConfig, batch_size: int,
                  ten_crop: bool, drop_remainder: bool) -> tf.data.Dataset:
  crop_size, pad, mean = data_config.crop_size, data_config.pad, source.mean

  def preprocess(images, labels):
    return {IMAGE: eval_crops.eval_crops(images, mean, crop_size, pad, ten_crop)}, labels

  # Shards in file order, one after the other: the order of the examples on disk.
  dataset = tf.data.TFRecordDataset(records.shard_files(source.data_dir, split))
  dataset = dataset.map(lambda serialized: _decode(serialized, source.stored_size),
                        num_parallel_calls=AUTOTUNE, deterministic=True)
  if source.stored_size is None:  # images of different sizes are cropped before batching
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder)
  # One size: a few ops per batch instead of per image.
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)


def _finish_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  # The per-image ops are small and the map already runs one image per core: letting each
  # op split its work over the intra-op threads as well measured ~10% slower.
  options.threading.max_intra_op_parallelism = 1
  return dataset.prefetch(AUTOTUNE).with_options(options)


_RECORD_PROBLEM = re.compile(r'(corrupted|truncated) record at \d+')
_LABEL_PROBLEM = re.compile(r'label value of (-?\d+) which is outside the valid range of '
                            r'\[0, (\d+)\)')


def describe_data_error(error: tf.errors.OpError, data_dir: str) -> str:
  """One line for a DataLossError or InvalidArgumentError met reading `data_dir`'s shards.

  A damaged record gets the shard that holds it, found by reading the shards again (TF's
  message names no file; the time is spent only on this failure path); a label outside
  dataset.json's classes says so; anything else gets the error's own message.
  """
  message = error.message
  if isinstance(error, tf.errors.DataLossError):
    damaged = find_damaged_shard(data_dir)
    if damaged:
      return damaged
  label = _LABEL_PROBLEM.search(message)
  if label:
    return (f'{data_dir}: a record has label {label.group(1)}, but '
            f'{os.path.join(data_dir, records.METADATA_FILE)} lists {label.group(2)} classes: '
            f'it does not describe these shards; re-convert the dataset')
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  noise = ('Graph execution error', 'Detected at node', 'Node:', '[[', 'File "', '<stack')
  useful = [line for line in lines if not line.startswith(noise)] or lines or ['']
  return f'{data_dir}: {type(error).__name__}: {useful[0]}'


def find_damaged_shard(data_dir: str) -> Optional[str]:
  """'<shard>: corrupted record at <offset>' for the first shard of `data_dir` that fails its
  checksums or ends early, None if every shard reads."""
  for split in records.SPLITS:
    try:
      files = records.shard_files(data_dir, split)
    except FileNotFoundError:
      continue
    for path in files:
      problem = _read_problem(path)
      if problem:
        return f'{path}: {problem} (a damaged shard: re-convert the dataset)'
  return None


def _read_problem(path: str) -> Optional[str]:
  """What stops a TFRecord file from being read to its end, None if nothing does."""
  with tf.Graph().as_default():  # whatever mode the caller is in
    batches = tf.data.TFRecordDataset(path).batch(1024)
    size = tf.size(tf.compat.v1.data.make_one_shot_iterator(batches).get_next())
    with tf.compat.v1.Session() as session:
      try:
        while True:
          session.run(size)
      except tf.errors.OutOfRangeError:
        return None
      except tf.errors.DataLossError as error:
        problem = _RECORD_PROBLEM.search(error.message)
        return problem.group(0) if problem else 'unreadable'
