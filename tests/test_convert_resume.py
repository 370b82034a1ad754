"""A killed conversion resumes: finished shards are kept, the result is the same as without
the interruption, and shards of another conversion are never mixed in."""

import os

import pytest

from alexnet_tf import records
from alexnet_tf.convert import folder
from alexnet_tf.convert import shards
from alexnet_tf.convert import worker
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

SHARDS = {records.TRAIN: 4, records.VALIDATION: 2}


def _convert(root, out, **kwargs):
  return folder.convert(str(root), str(out), validation_fraction=0.2, num_shards=SHARDS,
                        workers=1, progress=False, **kwargs)


def _files(directory):
  return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))
          if (directory / name).is_file()}


def _kill_after(monkeypatch, num_chunks):
  """Makes the conversion die like a killed process while processing chunk `num_chunks`."""
  calls = []
  process_chunk = worker.process_chunk

  def dying(task):
    calls.append(task.shard_name)
    if len(calls) > num_chunks:
      raise KeyboardInterrupt
    return process_chunk(task)

  monkeypatch.setattr(worker, 'process_chunk', dying)
  monkeypatch.setattr(writer, 'CHUNK_SIZE', 20)  # three chunks per training shard
  return calls


def test_resumed_conversion_equals_an_uninterrupted_one(cifar10_jpeg_subset,
                                                        cifar10_subset_records, tmp_path,
                                                        monkeypatch):
  out = tmp_path / 'out'
  calls = _kill_after(monkeypatch, 7)  # shards 0 and 1 done, shard 2 half written
  with pytest.raises(KeyboardInterrupt):
    _convert(cifar10_jpeg_subset, out)
  monkeypatch.undo()
  assert calls[-1] == 'train-00002-of-00004'
  finished = ['train-00000-of-00004', 'train-00001-of-00004']
  assert sorted(name for name in os.listdir(out) if not name.startswith('.')) == (
      finished + ['train-00002-of-00004' + shards.TMP_SUFFIX])
  with pytest.raises(FileNotFoundError):
    records.read_metadata(str(out))  # no dataset.json: the directory is not complete
  before = {name: os.stat(out / name) for name in finished}

  _convert(cifar10_jpeg_subset, out)

  for name, stat in before.items():  # kept, not rewritten
    after = os.stat(out / name)
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
  assert not any(name.endswith(shards.TMP_SUFFIX) for name in os.listdir(out))
  # Byte for byte what the uninterrupted conversion of the same images wrote.
  assert _files(out) == _files(cifar10_subset_records)


def test_a_shard_without_its_state_is_written_again(cifar10_jpeg_subset, tmp_path):
  out = tmp_path / 'out'
  _convert(cifar10_jpeg_subset, out)
  reference = _files(out)
  os.remove(shards.state_path(str(out), 'validation-00001-of-00002'))
  before = os.stat(out / 'validation-00000-of-00002')
  (out / 'validation-00001-of-00002').write_bytes(b'garbage from a crash')
  _convert(cifar10_jpeg_subset, out)
  assert _files(out) == reference
  assert os.stat(out / 'validation-00000-of-00002').st_mtime_ns == before.st_mtime_ns


def test_other_settings_rewrite_the_shards(cifar10_jpeg_subset, tmp_path):
  out = tmp_path / 'out'
  first = _convert(cifar10_jpeg_subset, out)
  shard = (out / 'train-00000-of-00004').read_bytes()
  second = _convert(cifar10_jpeg_subset, out, seed=1)
  assert (out / 'train-00000-of-00004').read_bytes() != shard
  assert second.counts == first.counts
  assert second.color_stats != first.color_stats  # another validation split


def test_shards_of_another_conversion_are_refused_or_overwritten(cifar10_jpeg_subset, tmp_path):
  out = tmp_path / 'out'
  _convert(cifar10_jpeg_subset, out)
  with pytest.raises(ConversionError, match=r'holds 4 shards .*train-00000-of-00004.*--overwrite'):
    folder.convert(str(cifar10_jpeg_subset), str(out), validation_fraction=0.2,
                   num_shards={records.TRAIN: 2, records.VALIDATION: 2}, workers=1,
                   progress=False)
  metadata = folder.convert(str(cifar10_jpeg_subset), str(out), validation_fraction=0.2,
                            num_shards={records.TRAIN: 2, records.VALIDATION: 2}, workers=1,
                            progress=False, overwrite=True)
  assert metadata.num_shards[records.TRAIN] == 2
  assert len(records.shard_files(str(out), records.TRAIN)) == 2
