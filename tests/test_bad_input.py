"""Hostile and broken inputs (issue 13): a clear error or a listed skip, a bounded cost, nothing
lost. Each test builds its bad input small (a bomb is a few KB of compressed zeros).

Converter: formats, JPEGs only Pillow decodes, decompression bombs, CIFAR-10 archives,
special files and file names, class names, the output directory and its lock. Training side:
damaged shards and a dataset.json that does not match its shards.
"""

import dataclasses
import io
import os
import pathlib
import pickle
import shutil
import struct
import tarfile
import zlib

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from alexnet_tf import decoding, dirlock, records
from alexnet_tf.convert import cifar10, cli, download, folder, images, writer
from alexnet_tf.convert.errors import ConversionError
from conftest import CIFAR10_CLASSES, make_cifar10_batch


def _save(image: Image.Image, image_format: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **kwargs)
  return buffer.getvalue()


@pytest.fixture(scope='module')
def photo():
  return Image.fromarray(skimage.data.chelsea()).resize((48, 40))


def _tree(root: pathlib.Path, files, classes=()) -> pathlib.Path:
  """root/<class>/<name> = bytes for {'class/name': bytes}, plus a good JPEG, good.jpg, in
  each of those classes and of `classes`."""
  good = _save(Image.fromarray(skimage.data.astronaut()[:64, :64]), 'JPEG')
  for name in set(classes) | {relative.split('/')[0] for relative in files}:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / 'good.jpg').write_bytes(good)
  for relative, data in files.items():
    (root / relative).write_bytes(data)
  return root


def _convert(root, out, **kwargs):
  return folder.convert(str(root), str(out), validation_fraction=0.0, workers=1,
                        progress=False, **kwargs)


def _skipped(out) -> dict:
  lines = (pathlib.Path(out) / writer.SKIPPED_FILE).read_text(encoding='utf-8').splitlines()
  return {line.split('\t')[1]: line.split('\t')[2] for line in lines[1:]}


# --- 5: one set of formats: JPEG and PNG stored, what training and serving decode ---------

@pytest.mark.parametrize('image_format, name', [
    ('PNG', 'a.png'), ('GIF', 'a.gif'), ('BMP', 'a.bmp'), ('TIFF', 'a.tif'), ('WEBP', 'a.webp'),
    ('PPM', 'a.ppm'), ('PNG', 'png_named.jpg')])
def test_accepted_formats_are_stored_as_jpeg_that_serving_decodes(photo, tmp_path, read_split,
                                                                  image_format, name):
  root = _tree(tmp_path / 'root', {f'cat/{name}': _save(photo, image_format)})
  _convert(root, tmp_path / 'out')
  examples = read_split(tmp_path / 'out', records.TRAIN)
  assert len(examples) == 2 and not _skipped(tmp_path / 'out')
  for example in examples:
    assert example[records.IMAGE_FORMAT] == b'jpeg'
    served = decoding.decode_limited(tf.constant(example[records.IMAGE_ENCODED]))
    assert served.shape[:2] == (example[records.IMAGE_HEIGHT], example[records.IMAGE_WIDTH])


@pytest.mark.parametrize('image_format', ['TGA', 'PCX', 'SGI', 'IM'])
def test_other_formats_are_skipped_whatever_their_name(photo, tmp_path, image_format):
  root = _tree(tmp_path / 'root', {'cat/other.png': _save(photo, image_format)})
  _convert(root, tmp_path / 'out')
  assert 'not an image in an accepted format (JPEG, PNG' in _skipped(tmp_path / 'out')[
      'cat/other.png']


# --- 6: JPEGs Pillow decodes and TensorFlow does not -----------------------------------

def _jpeg_only_pillow_decodes() -> bytes:
  """A JPEG whose end marker is overwritten, of the kind Pillow still decodes."""
  for size in (64, 80, 96, 112):
    data = _save(Image.fromarray(skimage.data.chelsea()).resize((size, size)), 'JPEG',
                 quality=90)
    for tail in (b'\0\0', b'ab', b'\xff\xee'):
      damaged = data[:-2] + tail
      try:
        if images.encode_file(damaged).verbatim:
          return damaged
      except images.BadImageError:
        continue
  raise AssertionError('no damaged JPEG that Pillow decodes: the test needs another one')


def test_a_jpeg_tensorflow_cannot_decode_is_skipped_and_leaves_no_trace(tmp_path):
  damaged = _jpeg_only_pillow_decodes()
  with pytest.raises(tf.errors.InvalidArgumentError):
    decoding.decode_image(tf.constant(damaged))
  root = _tree(tmp_path / 'root', {'cat/damaged.jpg': damaged}, classes=['dog'])
  with_it = _convert(root, tmp_path / 'out')
  assert "TensorFlow's JPEG decoder, which training uses, fails: jpeg::Uncompress failed" in (
      _skipped(tmp_path / 'out')['cat/damaged.jpg'])
  os.remove(root / 'cat' / 'damaged.jpg')
  without = _convert(root, tmp_path / 'out2')
  assert with_it.counts == without.counts
  assert with_it.color_stats == without.color_stats  # the chunk was redone without it


# --- 7: decompression bombs ---------------------------------------------------------------

def _png_of_zeros(width: int, height: int, bit_depth: int = 8) -> bytes:
  """A grayscale PNG of zeros, built row by row: KBs of file for up to GBs of pixels."""
  def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack(
        '>I', zlib.crc32(kind + body) & 0xFFFFFFFF)
  row = b'\0' * (1 + width * bit_depth // 8)  # filter byte + samples
  compressor, idat = zlib.compressobj(9), []
  for _ in range(height):
    idat.append(compressor.compress(row))
  idat.append(compressor.flush())
  header = struct.pack('>IIBBBBB', width, height, bit_depth, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', b''.join(idat)) +
          chunk(b'IEND', b''))


@pytest.mark.parametrize('width, height, bit_depth', [(12000, 12000, 8), (13000, 13000, 16)])
def test_decompression_bombs_are_skipped_from_their_header(tmp_path, width, height, bit_depth):
  bomb = _png_of_zeros(width, height, bit_depth)
  assert len(bomb) < 1 << 20
  root = _tree(tmp_path / 'root', {'cat/bomb.png': bomb})
  _convert(root, tmp_path / 'out')
  assert _skipped(tmp_path / 'out')['cat/bomb.png'] == (
      f'too large: {width}x{height} is {width * height} pixels, over the limit of '
      f'{images.DEFAULT_MAX_PIXELS} (--max-pixels)')


def test_the_pixel_limit_is_an_option_and_the_serving_limit(photo, tmp_path, capsys):
  assert images.DEFAULT_MAX_PIXELS == decoding.MAX_SERVING_PIXELS
  root = _tree(tmp_path / 'root', {'cat/photo.png': _save(photo.resize((100, 80)), 'PNG')})
  assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir',
                   str(tmp_path / 'out'), '--validation-fraction', '0', '--workers', '1',
                   '--no-progress', '--max-pixels', str(100 * 80 - 1)]) == 0
  assert 'train 1 examples' in capsys.readouterr().out  # good.jpg, 64x64
  assert _skipped(tmp_path / 'out') == {
      'cat/photo.png': 'too large: 100x80 is 8000 pixels, over the limit of 7999 (--max-pixels)'}


def test_training_and_evaluation_decode_stored_images_up_to_a_limit(photo, capsys):
  assert images.MAX_PIXELS == decoding.MAX_STORED_PIXELS  # what converts, trains
  png = bytearray(_save(photo, 'PNG'))
  png[16:24] = (20000).to_bytes(4, 'big') * 2  # a header claiming 400 M pixels
  with pytest.raises(tf.errors.InvalidArgumentError, match='the limit of stored images'):
    decoding.decode_stored(tf.constant(bytes(png)))
  with pytest.raises(tf.errors.InvalidArgumentError, match='the limit of stored images'):
    decoding.decode_window(tf.constant(bytes(png)), tf.constant([0.5, 0.5]), 24)
  with pytest.raises(SystemExit):
    cli.main(['--dataset', 'folder', '--source', '.', '--output-dir', 'x', '--max-pixels',
              str(images.MAX_PIXELS + 1)])
  assert 'what training decodes' in capsys.readouterr().err


# --- 8: CIFAR-10 archives -----------------------------------------------------------------

def _cifar_archive(path: pathlib.Path, change=None, extra=None) -> pathlib.Path:
  """An official-format archive whose data_batch_1 dict goes through `change`."""
  rng = np.random.default_rng(0)
  files = {f'data_batch_{i}': make_cifar10_batch(rng, f'data_batch_{i}', 10) for i in range(1, 6)}
  files['test_batch'] = make_cifar10_batch(rng, 'test_batch', 10)
  files['batches.meta'] = {b'label_names': [name.encode() for name in CIFAR10_CLASSES]}
  if change:
    change(files)
  with tarfile.open(path, 'w:gz') as archive:
    for name, size in (extra or {}).items():  # members of `size` zeros, first
      info = tarfile.TarInfo(f'{cifar10.BATCH_DIR}/{name}')
      info.size = size
      archive.addfile(info, _Zeros(size))
    for name, content in files.items():
      data = pickle.dumps(content, protocol=2)
      info = tarfile.TarInfo(f'{cifar10.BATCH_DIR}/{name}')
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return path


class _Zeros(io.RawIOBase):
  """`size` zero bytes, read without holding them."""

  def __init__(self, size):
    super().__init__()
    self.left = size

  def readinto(self, buffer):
    n = min(len(buffer), self.left)
    buffer[:n] = b'\0' * n
    self.left -= n
    return n

  def readable(self):
    return True


def _set(batch, key, value):
  return lambda files: files[batch].__setitem__(key, value)


@pytest.mark.parametrize('change, message', [
    (_set('data_batch_1', b'labels', [10 ** 30] * 10), 'data_batch_1: not a CIFAR-10 batch: '
                                                       'expected 10 integer labels in 0..9'),
    (_set('data_batch_1', b'labels', ['cat'] * 10), 'data_batch_1: not a CIFAR-10 batch'),
    (_set('data_batch_1', b'labels', [1.5] * 10), 'data_batch_1: not a CIFAR-10 batch'),
    (_set('data_batch_2', b'labels', [12] * 10), 'data_batch_2: not a CIFAR-10 batch'),
    (_set('test_batch', b'filenames', [b'\xff\xfe.png'] * 10),
     'test_batch: not a CIFAR-10 batch: file name 0 is not UTF-8'),
    (_set('batches.meta', b'label_names', [b'\xff'] * 10),
     'batches.meta: not a CIFAR-10 batch: no label names'),
    (_set('batches.meta', b'label_names', [b'air\nplane'] + [b'x'] * 9), 'line break'),
])
def test_malformed_cifar10_batches_are_one_line_errors(tmp_path, change, message):
  archive = _cifar_archive(tmp_path / 'bad.tar.gz', change)
  with pytest.raises(ConversionError, match=message):
    cifar10.convert(str(archive), str(tmp_path / 'out'), md5=None, workers=1, progress=False)


def test_cifar10_members_over_the_format_size_are_never_read(tmp_path, monkeypatch):
  archive = _cifar_archive(tmp_path / 'big.tar.gz',
                           extra={'readme.html': cifar10.MAX_FILE_BYTES + 1})
  assert archive.stat().st_size < 1 << 20

  def no_reading(*args):
    raise AssertionError('an oversized member was read')
  monkeypatch.setattr(tarfile.TarFile, 'extractfile', no_reading)
  with pytest.raises(ConversionError, match=f'readme.html: not a CIFAR-10 batch: '
                                            f'{cifar10.MAX_FILE_BYTES + 1} bytes, more than'):
    cifar10.convert(str(archive), str(tmp_path / 'out'), md5=None, workers=1, progress=False)


def test_local_cifar10_archives_are_md5_checked(tmp_path, capsys):
  archive = _cifar_archive(tmp_path / 'cifar-10-python.tar.gz')
  with pytest.raises(ConversionError, match=f'MD5 {download.file_md5(str(archive))}, expected '
                                            f'{cifar10.MD5}, the official'):
    cifar10.convert(str(archive), str(tmp_path / 'out'), workers=1, progress=False)
  metadata = cifar10.convert(str(archive), str(tmp_path / 'out'), workers=1, progress=False,
                             md5=download.file_md5(str(archive)))
  assert metadata.counts[records.TEST] == 10
  with pytest.raises(SystemExit) as exit_info:  # an empty --md5 no longer skips the check
    cli.main(['--dataset', 'cifar10', '--source', str(archive), '--output-dir',
              str(tmp_path / 'out'), '--md5', ''])
  assert exit_info.value.code == 2
  assert 'expected 32 hex digits' in capsys.readouterr().err


# --- 9, 10: special files, file names that are not UTF-8, class names -------------------------

def test_special_files_are_skipped_and_odd_names_converted(tmp_path, read_split):
  root = _tree(tmp_path / 'root', {}, classes=['cat'])
  os.mkfifo(root / 'cat' / 'fifo.jpg')
  os.symlink('/dev/zero', root / 'cat' / 'zero.jpg')
  with open(os.fsencode(root / 'cat') + b'/caf\xe9.jpg', 'wb') as f:  # Latin-1, not UTF-8
    f.write((root / 'cat' / 'good.jpg').read_bytes())
  _convert(root, tmp_path / 'out')
  assert _skipped(tmp_path / 'out') == {'cat/fifo.jpg': 'not a regular file (a FIFO)',
                                        'cat/zero.jpg': 'not a regular file (a character device)'}
  names = {example[records.FILENAME] for example in read_split(tmp_path / 'out', records.TRAIN)}
  assert names == {b'cat/good.jpg', b'cat/caf\xe9.jpg'}  # the name's own bytes


@pytest.mark.parametrize('class_name, problem', [
    (b'two\nlines', 'contains a line break'), (b'carriage\rreturn', 'contains a line break'),
    (b'caf\xe9', 'is not valid UTF-8')])
def test_class_names_labels_txt_cannot_hold_are_refused(photo, tmp_path, class_name, problem):
  root = _tree(tmp_path / 'root', {}, classes=['fine'])
  os.mkdir(os.fsencode(root) + b'/' + class_name)
  with open(os.fsencode(root) + b'/' + class_name + b'/a.jpg', 'wb') as f:
    f.write(_save(photo, 'JPEG'))
  with pytest.raises(ConversionError, match=f'{root}: the class name ".*" {problem}.*; rename it'):
    _convert(root, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


# --- 11, 12: the output directory ---------------------------------------------------------

def _unwritable(tmp_path, monkeypatch):
  # Root ignores permission bits, so the refusal is the kernel's answer, put in its place.
  def refuse(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', path)
  monkeypatch.setattr(writer.os, 'makedirs', refuse)
  return tmp_path / 'locked_away', 'Permission denied'


@pytest.mark.parametrize('case', ['a file', 'under a file', 'unwritable'])
def test_an_unusable_output_directory_is_a_one_line_error(photo, tmp_path, capsys, monkeypatch,
                                                          case):
  root = _tree(tmp_path / 'root', {'cat/a.jpg': _save(photo, 'JPEG')})
  (tmp_path / 'file').write_text('x')
  out, reason = {
      'a file': lambda: (tmp_path / 'file', 'it is a file'),
      'under a file': lambda: (tmp_path / 'file' / 'out', 'Not a directory'),
      'unwritable': lambda: _unwritable(tmp_path, monkeypatch)}[case]()
  assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir', str(out),
                   '--workers', '1', '--no-progress']) == 1
  assert capsys.readouterr().err == (f'error: {out}: cannot write the conversion there: '
                                     f'{reason}\n')


def test_a_second_conversion_into_one_directory_is_refused(photo, tmp_path, capsys):
  root = _tree(tmp_path / 'root', {'cat/a.jpg': _save(photo, 'JPEG')})
  out = tmp_path / 'out'
  out.mkdir()
  with dirlock.hold(str(out), writer.LOCK_FILE, 'the first conversion', ''):
    assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir', str(out),
                     '--workers', '1', '--no-progress']) == 1
    err = capsys.readouterr().err
  assert err.startswith(f'error: {out} is in use: another conversion (pid {os.getpid()}: ')
  assert err.count('\n') == 1 and not os.path.exists(out / records.METADATA_FILE)
  assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir', str(out),
                   '--workers', '1', '--no-progress']) == 0  # the lock went with its holder


def test_verbose_adds_the_traceback(tmp_path, capsys):
  root = _tree(tmp_path / 'root', {}, classes=['cat'])
  (tmp_path / 'file').write_text('x')
  assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir',
                   str(tmp_path / 'file'), '--verbose', '--no-progress']) == 1
  err = capsys.readouterr().err
  assert 'Traceback (most recent call last)' in err and err.endswith('it is a file\n')


# --- 16: damaged shards and a dataset.json that does not match them (train, evaluate) ------

def _train_args(data_dir, model_dir, *extra):
  return ['--dataset', 'cifar10', '--data-dir', str(data_dir), '--model-dir', str(model_dir),
          '--batch-size', '16', '--seed', '3', '--no-export', *extra]


def _damage(data_dir, split, how):
  """Flips a byte inside the first record of every shard of `split`, or cuts each in half."""
  for shard in records.shard_files(str(data_dir), split):
    data = bytearray(pathlib.Path(shard).read_bytes())
    if how == 'flipped':
      data[100] ^= 0xFF
    else:
      del data[len(data) // 2:]
    pathlib.Path(shard).write_bytes(bytes(data))
  return records.shard_files(str(data_dir), split)[0]


@pytest.fixture(scope='module')
def short_run(cifar10_subset_records, tmp_path_factory):
  from alexnet_tf import train  # pylint: disable=import-outside-toplevel
  model_dir = tmp_path_factory.mktemp('short_run') / 'model'
  assert train.main(_train_args(cifar10_subset_records, model_dir, '--max-steps', '2')) == 0
  return model_dir


def test_training_on_a_damaged_shard_names_the_shard(cifar10_subset_records, tmp_path, caplog):
  from alexnet_tf import train  # pylint: disable=import-outside-toplevel
  data = tmp_path / 'data'
  shutil.copytree(cifar10_subset_records, data)
  shard = _damage(data, records.TRAIN, 'flipped')
  assert train.main(_train_args(data, tmp_path / 'run', '--max-steps', '2')) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
  assert errors[-1].startswith(f'{shard}: corrupted record at ') and '\n' not in errors[-1]
  assert 'Traceback' not in caplog.text


def test_evaluating_a_damaged_shard_names_the_shard(short_run, cifar10_subset_records, tmp_path,
                                                    caplog):
  from alexnet_tf import evaluate  # pylint: disable=import-outside-toplevel
  data = tmp_path / 'data'
  shutil.copytree(cifar10_subset_records, data)
  shard = _damage(data, records.VALIDATION, 'truncated')
  assert evaluate.main(['--model-dir', str(short_run), '--data-dir', str(data), '--output',
                        str(tmp_path / 'eval.json')]) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
  assert errors[-1].startswith(f'{shard}: truncated record at ')


def test_a_dataset_json_with_fewer_classes_than_the_labels_is_one_line(
    cifar10_subset_records, tmp_path, caplog):
  from alexnet_tf import train  # pylint: disable=import-outside-toplevel
  data = tmp_path / 'data'
  shutil.copytree(cifar10_subset_records, data)
  metadata = records.read_metadata(str(data))
  records.write_metadata(str(data), dataclasses.replace(metadata, classes=metadata.classes[:5]))
  assert train.main(_train_args(data, tmp_path / 'run', '--max-steps', '2')) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
  assert errors[-1].startswith(f'{data}: a record has label ')
  assert errors[-1].endswith(f'{data / records.METADATA_FILE} lists 5 classes: it does not '
                             f'describe these shards; re-convert the dataset')
