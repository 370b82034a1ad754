"""CIFAR-10 from the official python-pickle archive, cifar-10-python.tar.gz.

The archive holds cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta:
pickled dicts with b'data' (uint8 [10000, 3072]: each image's red, green and blue 32x32
planes, row-major), b'labels' (0..9) and b'filenames'; batches.meta has b'label_names'.
data_batch_1..5 are the training data, of which a stratified `validation_fraction` is held
out; test_batch becomes the `test` split, which the project never tunes on. The images are
stored as lossless 32x32 PNGs.
"""

import dataclasses
import io
import logging
import os
import pickle
import tarfile
import urllib.parse
import zlib
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from alexnet_tf import records
from alexnet_tf.convert import download as download_lib
from alexnet_tf.convert import split as split_lib
from alexnet_tf.convert import worker
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
MD5 = 'c58f30108f718f92721af3b95e74349a'
BATCH_DIR = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCH = 'test_batch'
META_FILE = 'batches.meta'
IMAGE_SIZE = 32
DEFAULT_VALIDATION_FRACTION = 0.1  # 45,000 training and 5,000 validation images
DEFAULT_SHARDS = {records.TRAIN: 8, records.VALIDATION: 2, records.TEST: 2}
# The official batches are 31.0 MB (10,000 images of 3,072 bytes, labels and file names),
# batches.meta 158 bytes: a larger file is not CIFAR-10 and is never read into memory.
MAX_FILE_BYTES = 32 << 20
MAX_MEMBERS = 64  # the official archive has 9

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
  """One pickled batch.

  Attributes:
    name: the batch file's name, e.g. 'data_batch_1'.
    pixels: uint8 [N, 32, 32, 3], RGB.
    labels: int64 [N].
    filenames: the N original file names.
  """
  name: str
  pixels: np.ndarray
  labels: np.ndarray
  filenames: Tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Cifar10:
  classes: Tuple[str, ...]
  train: Tuple[Batch, ...]  # data_batch_1..5
  test: Batch


def convert(source: Optional[str], output_dir: str, *,
            validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
            num_shards: Optional[Mapping[str, int]] = None, workers: Optional[int] = None,
            resize: int = 0, seed: int = 0, download_dir: Optional[str] = None,
            md5: Optional[str] = MD5, overwrite: bool = False,
            progress: bool = True) -> records.DatasetMetadata:
  """Converts CIFAR-10 into `output_dir`.

  Args:
    source: a URL (downloaded to `download_dir`), the downloaded archive or the extracted
      cifar-10-batches-py/ directory (or its parent); None: the official URL.
    output_dir: where the shards and metadata go.
    validation_fraction: the share of every class held out of the training batches.
    num_shards: shards per split, overriding DEFAULT_SHARDS.
    workers: processes that encode images; None: the core count.
    resize: 0 keeps 32x32; N stores N x N images.
    seed: seeds the validation split and the assignment to shards.
    download_dir: where a URL is downloaded to; None: `output_dir`.
    md5: the archive's expected MD5, checked for downloads and local archives alike (not
      for an extracted directory); None skips the check.
    overwrite: delete an earlier conversion in `output_dir` first.
    progress: show progress bars.

  Returns:
    The metadata written to dataset.json.

  Raises:
    ConversionError: the source is missing or malformed, or the download failed.
  """
  options = worker.EncodeOptions(resize=resize)  # checks the arguments before any work
  split_lib.check_fraction(validation_fraction)
  source = source or URL
  data = load(source, download_dir or output_dir, md5=md5, progress=progress)
  train_items = [item for batch in data.train for item in _items(batch)]
  kept, held_out = split_lib.stratified_split([item.label for item in train_items],
                                              validation_fraction, seed)
  splits = {
      records.TRAIN: [train_items[i] for i in kept],
      records.VALIDATION: [train_items[i] for i in held_out],
      records.TEST: _items(data.test),
  }
  return writer.write_dataset(
      output_dir, name='cifar10', classes=data.classes, splits=splits,
      num_shards={**DEFAULT_SHARDS, **(num_shards or {})},
      options=options, workers=workers, seed=seed,
      source=source if _is_url(source) else os.path.abspath(source), overwrite=overwrite,
      progress=progress)


def load(source: str, download_dir: str, md5: Optional[str] = MD5,
         progress: bool = True) -> Cifar10:
  """Reads the batches from a URL (downloaded first), an archive or a directory."""
  if _is_url(source):
    name = os.path.basename(urllib.parse.urlparse(source).path) or 'cifar-10-python.tar.gz'
    path = download_lib.download(source, os.path.join(download_dir, name), md5=md5,
                                 progress=progress)
  elif os.path.isfile(source):
    path = source
    _check_md5(path, md5)
  elif os.path.isdir(source):
    path = source
  else:
    raise ConversionError(f'{source}: no such file or directory (expected a URL, '
                          f'cifar-10-python.tar.gz or the extracted {BATCH_DIR}/ directory)')
  files = _read_directory(path) if os.path.isdir(path) else _read_archive(path)
  meta = _unpickle(files[META_FILE], f'{path}:{META_FILE}')
  try:
    classes = tuple(name.decode('utf-8') for name in meta[b'label_names'])
  except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
    raise ConversionError(f'{path}:{META_FILE}: not a CIFAR-10 batch: no label names '
                          f'({type(error).__name__}: {error})') from None
  train = tuple(_decode_batch(name, _unpickle(files[name], f'{path}:{name}'), classes, path)
                for name in TRAIN_BATCHES)
  test = _decode_batch(TEST_BATCH, _unpickle(files[TEST_BATCH], f'{path}:{TEST_BATCH}'),
                       classes, path)
  return Cifar10(classes=classes, train=train, test=test)


def _is_url(source: str) -> bool:
  return source.startswith(('http://', 'https://'))


_NEEDED = (META_FILE,) + TRAIN_BATCHES + (TEST_BATCH,)


def _check_md5(path: str, md5: Optional[str]) -> None:
  if md5 is None:
    log.warning('%s: not checking its MD5', path)
    return
  actual = download_lib.file_md5(path)
  if actual != md5.lower():
    official = ', the official cifar-10-python.tar.gz' if md5.lower() == MD5 else ''
    raise ConversionError(f'{path}: MD5 {actual}, expected {md5}{official}: a damaged or '
                          f'another file. Pass its MD5 (--md5) or --no-md5-check to convert it '
                          f'anyway')


def _read_archive(path: str) -> Dict[str, bytes]:
  """The batch files of the archive, by name; members are bounded by the format's sizes."""
  files = {}
  try:
    with tarfile.open(path, 'r:*') as archive:
      for count, member in enumerate(archive, 1):
        if count > MAX_MEMBERS:
          raise ConversionError(f'{path}: not a CIFAR-10 archive: more than {MAX_MEMBERS} '
                                f'members')
        _check_size(f'{path}:{member.name}', member.size)
        name = os.path.basename(member.name)
        if member.isfile() and name in _NEEDED:
          files[name] = archive.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
    raise ConversionError(f'{path}: not a readable CIFAR-10 archive ({error})') from None
  return _check_complete(files, path)


def _check_size(where: str, size: int) -> None:
  if size > MAX_FILE_BYTES:
    raise ConversionError(f'{where}: not a CIFAR-10 batch: {size} bytes, more than the '
                          f'{MAX_FILE_BYTES} of any official file')


def _read_directory(path: str) -> Dict[str, bytes]:
  if os.path.isdir(os.path.join(path, BATCH_DIR)):
    path = os.path.join(path, BATCH_DIR)
  files = {}
  for name in _NEEDED:
    file_path = os.path.join(path, name)
    if os.path.isfile(file_path):
      _check_size(file_path, os.path.getsize(file_path))
      with open(file_path, 'rb') as f:
        files[name] = f.read(MAX_FILE_BYTES + 1)
      _check_size(file_path, len(files[name]))  # a file that grew since
  return _check_complete(files, path)


def _check_complete(files: Dict[str, bytes], path: str) -> Dict[str, bytes]:
  missing = [name for name in _NEEDED if name not in files]
  if missing:
    raise ConversionError(f'{path}: not the CIFAR-10 python version, missing {missing}')
  return files


class _BatchUnpickler(pickle.Unpickler):
  """Rebuilds NumPy arrays and nothing else: a pickle from a URL could otherwise run code."""

  _ALLOWED = frozenset([
      ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
      ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
      ('numpy', 'ndarray'), ('numpy', 'dtype'),
      ('_codecs', 'encode'),  # how Python 3 pickles bytes at protocol 2
  ])

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a CIFAR-10 batch')


def _unpickle(data: bytes, where: str) -> dict:
  try:
    value = _BatchUnpickler(io.BytesIO(data), encoding='bytes').load()
  except Exception as error:  # pylint: disable=broad-except
    # Unpickling garbage raises almost anything (UnpicklingError, EOFError, KeyError, ...).
    raise ConversionError(f'{where}: not a CIFAR-10 batch ({type(error).__name__}: '
                          f'{error})') from None
  if not isinstance(value, dict):
    raise ConversionError(f'{where}: not a CIFAR-10 batch (a {type(value).__name__})')
  return value


def _decode_batch(name: str, raw: dict, classes: Tuple[str, ...], path: str) -> Batch:
  where = f'{path}:{name}'
  data = raw.get(b'data')
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
      data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE):
    shape = getattr(data, 'shape', None)
    raise ConversionError(f'{where}: not a CIFAR-10 batch: expected uint8 data [N, 3072], got '
                          f'{getattr(data, "dtype", type(data).__name__)} {shape}')
  labels = _labels(raw.get(b'labels'), len(data), len(classes), where)
  # Planes [N, 3, 32, 32] to pixels [N, 32, 32, 3].
  pixels = np.ascontiguousarray(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
  return Batch(name=name, pixels=pixels, labels=labels,
               filenames=_filenames(raw.get(b'filenames'), len(data), where))


def _labels(raw, count: int, num_classes: int, where: str) -> np.ndarray:
  """int64 [count] in 0..num_classes-1 from a batch's b'labels' list, else ConversionError."""
  expected = f'expected {count} integer labels in 0..{num_classes - 1}'
  try:
    values = np.asarray(raw if raw is not None else [])
    if values.size and values.dtype.kind not in 'iu' and not (
        values.dtype == object and all(isinstance(v, int) for v in values.ravel())):
      raise TypeError(f'{values.dtype} values')
    labels = values.astype(np.int64)
  except (OverflowError, ValueError, TypeError) as error:
    raise ConversionError(f'{where}: not a CIFAR-10 batch: {expected} ({error})') from None
  if labels.shape != (count,) or (labels.size and (labels.min() < 0 or
                                                   labels.max() >= num_classes)):
    raise ConversionError(f'{where}: not a CIFAR-10 batch: {expected}, got '
                          f'{labels.size} from {labels.min(initial=0)} to '
                          f'{labels.max(initial=0)}')
  return labels


def _filenames(raw, count: int, where: str) -> Tuple[str, ...]:
  """The images' names from b'filenames' (made up when missing), else ConversionError."""
  if not isinstance(raw, (list, tuple)) or len(raw) != count:
    return tuple(f'{index:05d}.png' for index in range(count))
  names = []
  for index, name in enumerate(raw):
    try:
      names.append(name.decode('utf-8') if isinstance(name, bytes) else str(name))
    except UnicodeDecodeError as error:
      raise ConversionError(f'{where}: not a CIFAR-10 batch: file name {index} is not UTF-8 '
                            f'({error})') from None
  return tuple(names)


def _items(batch: Batch) -> List[worker.Item]:
  return [worker.Item(f'{batch.name}/{filename}', int(label), pixels)
          for filename, label, pixels in zip(batch.filenames, batch.labels, batch.pixels)]
