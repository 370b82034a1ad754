"""The on-disk dataset format, defined once for the writer (`tools/`) and the reader.

A converted dataset is a directory holding:

  <split>-00000-of-00008   sharded TFRecord files of `tf.train.Example`s
  dataset.json             `DatasetMetadata`: classes, counts per split, image size,
                           schema version and the training-set colour statistics
  labels.txt               one class name per line, line i is label i
  mean_image.npy           float32 [height, width, 3] per-pixel training mean on 0-255,
                           present only when every stored image has the same size

Splits are named `train`, `validation` and `test`.
"""

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

# Bumped whenever a key, a dtype or the meaning of a field changes; readers refuse
# newer versions instead of misreading them.
SCHEMA_VERSION = 1

# Feature keys of every `tf.train.Example` (the names of TF's own ImageNet converters).
IMAGE_ENCODED = 'image/encoded'  # bytes: the JPEG or PNG file
IMAGE_FORMAT = 'image/format'  # bytes: b'jpeg' or b'png'
IMAGE_HEIGHT = 'image/height'  # int64
IMAGE_WIDTH = 'image/width'  # int64
LABEL = 'image/class/label'  # int64, 0-based
LABEL_TEXT = 'image/class/text'  # bytes: the class name
FILENAME = 'image/filename'  # bytes: path relative to the source root

METADATA_FILE = 'dataset.json'
LABELS_FILE = 'labels.txt'
MEAN_IMAGE_FILE = 'mean_image.npy'

TRAIN = 'train'
VALIDATION = 'validation'
TEST = 'test'
SPLITS = (TRAIN, VALIDATION, TEST)

_SHARD_RE = re.compile(r'^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})$')


def shard_name(split: str, index: int, num_shards: int) -> str:
  """`train-00003-of-00016`: the file name of shard `index` of `num_shards`."""
  if not 0 <= index < num_shards:
    raise ValueError(f'shard index {index} is outside 0..{num_shards - 1}')
  return f'{split}-{index:05d}-of-{num_shards:05d}'


def is_shard_name(name: str) -> bool:
  """True for a complete shard's file name (`train-00003-of-00016`), never a temporary one."""
  return _SHARD_RE.match(name) is not None


def shard_files(data_dir: str, split: str) -> List[str]:
  """The complete shard files of `split` in `data_dir`, sorted.

  Temporary files of an interrupted conversion never match the shard pattern, so they are
  never read. Raises FileNotFoundError if the split has no shards, or if some are missing.
  """
  found = []
  totals = set()
  for name in os.listdir(data_dir):
    match = _SHARD_RE.match(name)
    if match and match.group('split') == split:
      found.append(name)
      totals.add(int(match.group('total')))
  if not found:
    raise FileNotFoundError(f'{data_dir}: no TFRecord shards for split "{split}" '
                            f'(expected files like {shard_name(split, 0, 1)})')
  if len(totals) != 1 or len(found) != totals.pop():
    raise FileNotFoundError(f'{data_dir}: split "{split}" has an incomplete set of shards '
                            f'({len(found)} files: {sorted(found)[:3]}...); re-run the converter')
  return [os.path.join(data_dir, name) for name in sorted(found)]


@dataclasses.dataclass(frozen=True)
class ColorStats:
  """Training-set RGB statistics on the 0-255 scale, for mean subtraction and PCA lighting.

  `eigenvectors[:, i]` is the unit eigenvector of the 3x3 pixel covariance belonging to
  `eigenvalues[i]` (variances, not standard deviations), sorted by decreasing eigenvalue.
  """
  mean_rgb: Tuple[float, float, float]
  eigenvalues: Tuple[float, float, float]
  eigenvectors: Tuple[Tuple[float, float, float], ...]  # 3x3, columns are eigenvectors
  num_pixels: int

  @classmethod
  def from_moments(cls, pixel_sum: np.ndarray, outer_sum: np.ndarray, count: int) -> 'ColorStats':
    """Statistics from the sums of pixels [3] and of their outer products [3, 3]."""
    if count <= 0:
      raise ValueError('colour statistics need at least one pixel')
    mean = pixel_sum / count
    cov = outer_sum / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    return cls(mean_rgb=tuple(float(v) for v in mean),
               eigenvalues=tuple(float(max(v, 0.0)) for v in values),
               eigenvectors=tuple(tuple(float(v) for v in row) for row in vectors),
               num_pixels=int(count))


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
  """What `dataset.json` says about a converted dataset."""
  name: str
  classes: Tuple[str, ...]
  counts: Dict[str, int]  # examples per split
  num_shards: Dict[str, int]  # shards per split
  image_size: Optional[Tuple[int, int]]  # (height, width) when all images share it, else None
  color_stats: Optional[ColorStats]  # of the training split
  schema_version: int = SCHEMA_VERSION
  source: str = ''  # where the images came from, for the record

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str, path: str = METADATA_FILE) -> 'DatasetMetadata':
    raw = json.loads(text)
    version = raw.get('schema_version')
    if version != SCHEMA_VERSION:
      raise ValueError(f'{path}: schema version {version!r}, this alexnet_tf reads version '
                       f'{SCHEMA_VERSION}; re-convert the dataset with this version')
    stats = raw.get('color_stats')
    if stats is not None:
      stats = ColorStats(mean_rgb=tuple(stats['mean_rgb']),
                         eigenvalues=tuple(stats['eigenvalues']),
                         eigenvectors=tuple(tuple(r) for r in stats['eigenvectors']),
                         num_pixels=int(stats['num_pixels']))
    size = raw.get('image_size')
    return cls(name=raw['name'], classes=tuple(raw['classes']), counts=dict(raw['counts']),
               num_shards=dict(raw['num_shards']),
               image_size=tuple(size) if size is not None else None, color_stats=stats,
               schema_version=version, source=raw.get('source', ''))


def write_atomically(path: str, write, mode: str = 'w') -> None:
  """Writes `path` so that it is never seen half written: `write(file)` into path.tmp, then a
  rename over `path`."""
  tmp = path + '.tmp'
  with open(tmp, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
    write(f)
  os.replace(tmp, path)


def write_metadata(data_dir: str, metadata: DatasetMetadata,
                   mean_image: Optional[np.ndarray] = None) -> None:
  """Writes dataset.json, labels.txt and (if given) mean_image.npy, each atomically."""
  if mean_image is not None:
    write_atomically(os.path.join(data_dir, MEAN_IMAGE_FILE),
                     lambda f: np.save(f, mean_image.astype(np.float32)), mode='wb')
  write_atomically(os.path.join(data_dir, LABELS_FILE),
                   lambda f: f.write(''.join(c + '\n' for c in metadata.classes)))
  # dataset.json goes last: its presence says the directory is complete.
  write_atomically(os.path.join(data_dir, METADATA_FILE),
                   lambda f: f.write(metadata.to_json() + '\n'))


def read_metadata(data_dir: str) -> DatasetMetadata:
  """Reads `data_dir/dataset.json`; a clear error if it is missing or of another version."""
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: {data_dir} is not a converted dataset '
                            f'(run tools/make_tfrecords.py first)')
  with open(path, encoding='utf-8') as f:
    return DatasetMetadata.from_json(f.read(), path)


def read_mean_image(data_dir: str) -> Optional[np.ndarray]:
  """The per-pixel training mean [height, width, 3] float32 on 0-255, or None if absent."""
  path = os.path.join(data_dir, MEAN_IMAGE_FILE)
  if not os.path.isfile(path):
    return None
  return np.load(path).astype(np.float32)
