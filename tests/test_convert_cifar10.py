"""CIFAR-10 mode on a tiny archive in the official python-pickle format."""

import collections
import functools
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from alexnet_tf import records
from alexnet_tf.convert import cifar10
from alexnet_tf.convert.errors import ConversionError
from conftest import CIFAR10_CLASSES, FAKE_CIFAR10_BATCH_SIZE, write_cifar10_archive

# The archives of these tests are made up, so their MD5 is not the official one.
_convert = functools.partial(cifar10.convert, md5=None)


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  """(path, {batch name: batch dict}) of a fresh official-format archive."""
  path = tmp_path_factory.mktemp('cifar10_archive') / 'cifar-10-python.tar.gz'
  return path, write_cifar10_archive(path)


@pytest.fixture(scope='module')
def converted(archive, tmp_path_factory, read_split):
  path, _ = archive
  out = tmp_path_factory.mktemp('cifar10_records')
  metadata = _convert(str(path), str(out), workers=1, progress=False)
  return metadata, out, {split: read_split(out, split) for split in records.SPLITS}


def _original(batches, filename):
  """The uint8 [32, 32, 3] image a stored filename ('<batch>/<file>') came from."""
  batch_name, name = filename.split('/')
  batch = batches[batch_name]
  index = batch[b'filenames'].index(name.encode())
  return batch[b'data'][index].reshape(3, 32, 32).transpose(1, 2, 0), batch[b'labels'][index]


def test_splits_and_metadata(converted):
  metadata, out, examples = converted
  n = FAKE_CIFAR10_BATCH_SIZE
  assert metadata.counts == {records.TRAIN: 5 * n - 5 * n // 10, records.VALIDATION: 5 * n // 10,
                             records.TEST: n}
  assert metadata.classes == CIFAR10_CLASSES and metadata.image_size == (32, 32)
  assert metadata.source == os.path.abspath(metadata.source)
  # The validation split comes from the training batches, stratified; test is test_batch only.
  assert collections.Counter(ex[records.LABEL] for ex in examples[records.VALIDATION]) == {
      label: n // 20 for label in range(10)}
  assert {ex[records.FILENAME].decode().split('/')[0] for ex in examples[records.TEST]} == {
      'test_batch'}
  train_batches = {ex[records.FILENAME].decode().split('/')[0]
                   for split in (records.TRAIN, records.VALIDATION) for ex in examples[split]}
  assert train_batches == set(cifar10.TRAIN_BATCHES)
  assert records.read_metadata(str(out)) == metadata


def test_images_are_lossless_pngs_with_their_labels(converted, archive):
  _, _, examples = converted
  _, batches = archive
  for split in records.SPLITS:
    for ex in examples[split]:
      pixels, label = _original(batches, ex[records.FILENAME].decode())
      assert ex[records.IMAGE_FORMAT] == b'png'
      np.testing.assert_array_equal(ex['pixels'], pixels)
      assert ex[records.LABEL] == label
      assert ex[records.LABEL_TEXT].decode() == CIFAR10_CLASSES[label]


def test_statistics_cover_the_training_split_only(converted, archive, tmp_path):
  metadata, out, examples = converted
  _, batches = archive
  train = np.stack([_original(batches, ex[records.FILENAME].decode())[0]
                    for ex in examples[records.TRAIN]]).astype(np.float64)
  np.testing.assert_allclose(metadata.color_stats.mean_rgb, train.reshape(-1, 3).mean(axis=0))
  np.testing.assert_allclose(records.read_mean_image(str(out)), train.mean(axis=0), rtol=1e-6)


def test_extracted_directory_gives_the_same_dataset(converted, archive, tmp_path):
  metadata, _, _ = converted
  path, _ = archive
  with tarfile.open(path) as tar:
    tar.extractall(tmp_path / 'extracted', filter='data')
  for source in (tmp_path / 'extracted', tmp_path / 'extracted' / cifar10.BATCH_DIR):
    again = _convert(str(source), str(tmp_path / 'out'), workers=1, progress=False)
    assert (again.counts, again.color_stats) == (metadata.counts, metadata.color_stats)


def test_validation_fraction_zero_and_resize(archive, tmp_path):
  path, _ = archive
  metadata = _convert(str(path), str(tmp_path), validation_fraction=0.0, resize=40,
                             num_shards={records.TRAIN: 3}, workers=1, progress=False)
  assert metadata.counts == {records.TRAIN: 100, records.TEST: 20}
  assert metadata.num_shards == {records.TRAIN: 3, records.TEST: 2}
  assert metadata.image_size == (40, 40)


def _archive_with(tmp_path, members):
  path = tmp_path / 'bad.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(f'{cifar10.BATCH_DIR}/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


class _Exploit:

  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_refuses_pickles_that_run_code(archive, tmp_path):
  path, _ = archive
  with tarfile.open(path) as tar:
    members = {os.path.basename(m.name): tar.extractfile(m).read() for m in tar if m.isfile()}
  members['data_batch_3'] = pickle.dumps(_Exploit(), protocol=2)
  with pytest.raises(ConversionError, match=r'data_batch_3: .*posix.system is not allowed'):
    _convert(str(_archive_with(tmp_path, members)), str(tmp_path / 'out'))


def test_problems_name_the_path(archive, tmp_path):
  path, _ = archive
  with pytest.raises(ConversionError, match=f'{tmp_path}/nothing: no such file or directory'):
    _convert(str(tmp_path / 'nothing'), str(tmp_path / 'out'))
  truncated = tmp_path / 'truncated.tar.gz'
  truncated.write_bytes(path.read_bytes()[:3000])
  with pytest.raises(ConversionError, match=f'{truncated}: not a readable CIFAR-10 archive'):
    _convert(str(truncated), str(tmp_path / 'out'))
  with pytest.raises(ConversionError, match=r"missing \['batches.meta', 'data_batch_1'"):
    _convert(str(_archive_with(tmp_path, {'readme.html': b'hi'})), str(tmp_path / 'out'))
  with pytest.raises(ConversionError, match='validation fraction'):
    _convert(str(path), str(tmp_path / 'out'), validation_fraction=1.0)
