"""Shared data fixtures: CIFAR-10-shaped JPEGs (real ones, or photos when the shared data is
absent), a tiny official-format CIFAR-10 archive, and a reader for converted shards.

The real images come from cifar10-train-jpeg.tar.gz in the shared data directory:
$ALEXNET_TF_SHARED_DATA if set, else ../shared/data beside the checkout. The tarball holds
cifar10-jpeg/train/<class>/<nnnn>.jpg, 5,000 32x32 RGB JPEGs per class; only a subset is
extracted, into pytest's temporary directory. Without it (a fresh clone elsewhere, or the
variable set to '' or a missing path) the same tree is cut from scikit-image's bundled sample
photographs (tests/photos.py), so no test needs the shared data. The session's header names
the source.
"""

import io
import os
import pathlib
import pickle
import tarfile
from typing import Dict, List, Optional

import numpy as np
import pytest

import alexnet_tf  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before any test imports TF)
import photos

SHARED_DATA_ENV = 'ALEXNET_TF_SHARED_DATA'
DEFAULT_SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
CIFAR10_SUBSET_PER_CLASS = 30
# The tiny official-format archive: 5 training batches and a test batch of this many images.
FAKE_CIFAR10_BATCH_SIZE = 20


def _real_tarball(directory: str) -> Optional[pathlib.Path]:
  """directory/cifar10-train-jpeg.tar.gz if it is there, else None. An empty `directory`
  hides the shared data, as a missing one does (rather than meaning the current directory)."""
  tarball = pathlib.Path(directory, 'cifar10-train-jpeg.tar.gz')
  return tarball if directory and tarball.is_file() else None


# Read once, so that the header and every fixture of the session agree.
SHARED_DATA_DIR = os.environ.get(SHARED_DATA_ENV, str(DEFAULT_SHARED_DATA))
CIFAR10_JPEG_TARBALL = _real_tarball(SHARED_DATA_DIR)  # None: the photo stand-in is used


def pytest_report_header():
  if CIFAR10_JPEG_TARBALL:
    return f'CIFAR-10 JPEGs: the real ones, from {CIFAR10_JPEG_TARBALL}'
  why = (f'no {SHARED_DATA_DIR}/cifar10-train-jpeg.tar.gz' if SHARED_DATA_DIR
         else f'${SHARED_DATA_ENV} is empty')
  return f'CIFAR-10 JPEGs: patches of scikit-image sample photos ({why})'


def extract_cifar10_jpeg_subset(tarball: pathlib.Path, dest: pathlib.Path,
                                per_class: int) -> pathlib.Path:
  """Extracts the first `per_class` JPEGs of every class of the real tarball.

  Returns:
    The root `dest/cifar10-jpeg`, holding train/<class>/<nnnn>.jpg.
  """
  taken = {}
  with tarfile.open(tarball) as archive:
    for member in archive:
      parts = member.name.split('/')  # cifar10-jpeg/train/<class>/<nnnn>.jpg
      if not member.isfile() or len(parts) != 4 or '..' in parts:
        continue
      if taken.get(parts[2], 0) < per_class:
        taken[parts[2]] = taken.get(parts[2], 0) + 1
        path = dest.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(archive.extractfile(member).read())
  return dest / 'cifar10-jpeg'


@pytest.fixture(scope='session')
def cifar10_jpeg_subset(tmp_path_factory) -> pathlib.Path:
  """CIFAR10_SUBSET_PER_CLASS 32x32 RGB JPEGs of each of CIFAR10_CLASSES: the real
  CIFAR-10 training images when the shared data is there, else photo patches.

  Returns the root, named cifar10-jpeg, which holds train/<class>/<nnnn>.jpg (the tarball's
  layout). Read-only: tests that change the tree must copy it.
  """
  dest = tmp_path_factory.mktemp('cifar10_jpeg')
  if CIFAR10_JPEG_TARBALL:
    return extract_cifar10_jpeg_subset(CIFAR10_JPEG_TARBALL, dest, CIFAR10_SUBSET_PER_CLASS)
  return photos.write_photo_tree(dest, CIFAR10_CLASSES, CIFAR10_SUBSET_PER_CLASS)


@pytest.fixture(scope='session')
def cifar10_subset_records(cifar10_jpeg_subset, tmp_path_factory) -> pathlib.Path:
  """`cifar10_jpeg_subset` converted in folder mode: a dataset directory with 240 train and
  60 validation examples (32x32 JPEG), dataset.json and mean_image.npy. Read-only."""
  from alexnet_tf.convert import folder  # pylint: disable=import-outside-toplevel
  output = tmp_path_factory.mktemp('cifar10_records')
  folder.convert(str(cifar10_jpeg_subset), str(output), validation_fraction=0.2,
                 num_shards={'train': 4, 'validation': 2}, workers=1, progress=False)
  return output


def make_cifar10_batch(rng: np.random.Generator, name: str, size: int) -> Dict[bytes, object]:
  """A batch dict as in the official pickles: labels cycle through the 10 classes."""
  return {
      b'batch_label': name.encode(),
      b'labels': [i % 10 for i in range(size)],
      b'data': rng.integers(0, 256, size=(size, 3072), dtype=np.uint8),
      b'filenames': [f'{name}_img_{i:04d}.png'.encode() for i in range(size)],
  }


def write_cifar10_archive(path: pathlib.Path, batch_size: int = FAKE_CIFAR10_BATCH_SIZE,
                          seed: int = 0) -> Dict[str, Dict[bytes, object]]:
  """Writes a cifar-10-python.tar.gz in the official format with random images.

  Returns:
    {batch file name: the batch dict} of what was written.
  """
  rng = np.random.default_rng(seed)
  batches = {f'data_batch_{i}': make_cifar10_batch(rng, f'data_batch_{i}', batch_size)
             for i in range(1, 6)}
  batches['test_batch'] = make_cifar10_batch(rng, 'test_batch', batch_size)
  meta = {b'label_names': [name.encode() for name in CIFAR10_CLASSES],
          b'num_cases_per_batch': batch_size, b'num_vis': 3072}
  with tarfile.open(path, 'w:gz') as archive:
    for name, content in [('batches.meta', meta)] + list(batches.items()):
      data = pickle.dumps(content, protocol=2)  # the official files are Python 2 pickles
      info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return batches


@pytest.fixture(scope='session')
def fake_cifar10_archive(tmp_path_factory) -> pathlib.Path:
  """A tiny cifar-10-python.tar.gz in the official format (write_cifar10_archive, seed 0)."""
  path = tmp_path_factory.mktemp('fake_cifar10') / 'cifar-10-python.tar.gz'
  write_cifar10_archive(path)
  return path


def _read_split(data_dir, split: str) -> List[Dict[str, object]]:
  """Every example of a converted split, parsed with the keys of `records` and decoded.

  Returns:
    One dict per example in file order: the features under their record keys, plus
    'pixels' (uint8 [height, width, 3] from tf.io.decode_image).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from alexnet_tf import records  # pylint: disable=import-outside-toplevel
  tf1 = tf.compat.v1
  spec = {
      records.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
      records.IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string),
      records.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
      records.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
      records.LABEL: tf.io.FixedLenFeature([], tf.int64),
      records.LABEL_TEXT: tf.io.FixedLenFeature([], tf.string),
      records.FILENAME: tf.io.FixedLenFeature([], tf.string),
  }

  def parse(serialized):
    example = tf.io.parse_single_example(serialized, spec)
    example['pixels'] = tf.io.decode_image(example[records.IMAGE_ENCODED], channels=3,
                                           expand_animations=False)
    return example

  examples = []
  # A graph of its own: works whether or not the caller runs eagerly.
  with tf.Graph().as_default():
    dataset = tf.data.TFRecordDataset(records.shard_files(str(data_dir), split)).map(parse)
    next_example = tf1.data.make_one_shot_iterator(dataset).get_next()
    with tf1.Session() as session:
      while True:
        try:
          examples.append(session.run(next_example))
        except tf.errors.OutOfRangeError:
          return examples


@pytest.fixture(scope='session')
def read_split():
  """A function (data_dir, split) -> list of example dicts (see _read_split)."""
  return _read_split
