"""The command line: tools/make_tfrecords.py and alexnet_tf.convert.cli."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from alexnet_tf import records
from alexnet_tf.convert import cli
from conftest import CIFAR10_CLASSES

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch):
  # main() sets a TensorFlow logging default; keep it from leaking into other tests.
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))


def test_folder_conversion(cifar10_jpeg_subset, tmp_path, capsys):
  out = tmp_path / 'out'
  status = cli.main(['--dataset', 'folder', '--source', str(cifar10_jpeg_subset),
                     '--output-dir', str(out), '--validation-fraction', '0.2',
                     '--train-shards', '3', '--workers', '1', '--seed', '5', '--no-progress'])
  assert status == 0
  assert capsys.readouterr().out == (
      f'cifar10-jpeg: train 240, validation 60 examples, 10 classes, 32x32 -> {out}\n')
  metadata = records.read_metadata(str(out))
  assert metadata.num_shards == {records.TRAIN: 3, records.VALIDATION: 1}


def test_cifar10_archive_with_options(fake_cifar10_archive, tmp_path, capsys):
  status = cli.main(['--dataset', 'cifar10', '--source', str(fake_cifar10_archive),
                     '--output-dir', str(tmp_path), '--validation-fraction', '0',
                     '--test-shards', '1', '--resize', '36', '--workers', '1', '--no-progress',
                     '--no-md5-check'])
  assert status == 0
  assert 'cifar10: train 100, test 20 examples, 10 classes, 36x36' in capsys.readouterr().out
  assert records.read_metadata(str(tmp_path)).classes == CIFAR10_CLASSES


def test_skipped_images_are_in_the_summary(cifar10_jpeg_subset, tmp_path, capsys):
  root = tmp_path / 'root'
  shutil.copytree(cifar10_jpeg_subset / 'train' / 'cat', root / 'cat')
  shutil.copytree(cifar10_jpeg_subset / 'train' / 'dog', root / 'dog')
  (root / 'dog' / 'zero.jpg').write_bytes(b'')
  assert cli.main(['--dataset', 'folder', '--source', str(root), '--output-dir',
                   str(tmp_path / 'out'), '--workers', '1', '--no-progress']) == 0
  assert 'skipped 1 unusable images' in capsys.readouterr().out


def test_data_problems_are_one_line_errors(tmp_path, capsys):
  status = cli.main(['--dataset', 'folder', '--source', str(tmp_path / 'missing'),
                     '--output-dir', str(tmp_path / 'out'), '--no-progress'])
  assert status == 1
  err = capsys.readouterr().err
  assert err == f'error: {tmp_path}/missing: no such directory\n'


@pytest.mark.parametrize('flags, message', [
    (['--dataset', 'folder', '--val-labels', 'x.csv', '--source', '.'],
     '--val-labels applies to --dataset imagenet only'),
    (['--dataset', 'imagenet', '--validation-fraction', '0.1', '--source', '.'],
     '--validation-fraction does not apply to imagenet'),
    (['--dataset', 'imagenet'], '--dataset imagenet needs --source'),
    (['--dataset', 'cifar10', '--validation-fraction', '1'], 'must be in [0, 1)'),
    (['--dataset', 'cifar10', '--workers', '0'], 'must be >= 1'),
])
def test_bad_flags_exit_with_usage(flags, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as error:
    cli.main(flags + ['--output-dir', str(tmp_path)])
  assert error.value.code == 2
  assert message in capsys.readouterr().err


def test_the_script_with_worker_processes(cifar10_jpeg_subset, tmp_path):
  """The real entry point: spawned workers re-import the script, which must stay cheap."""
  root = tmp_path / 'root'
  for name in ('cat', 'dog'):
    (root / name).mkdir(parents=True)
    for path in sorted((cifar10_jpeg_subset / 'train' / name).iterdir())[:10]:
      shutil.copy(path, root / name)
  result = subprocess.run(
      [sys.executable, str(REPO / 'tools' / 'make_tfrecords.py'), '--dataset', 'folder',
       '--source', str(root), '--output-dir', str(tmp_path / 'out'), '--workers', '2',
       '--train-shards', '2', '--validation-fraction', '0.2'],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout == f'root: train 16, validation 4 examples, 2 classes, 32x32 -> ' \
                          f'{tmp_path / "out"}\n'
  assert 'converting: 100%' in result.stderr  # the progress bar over images


def test_workers_never_import_tensorflow():
  """Everything a spawned worker imports must be TensorFlow-free (it costs seconds each)."""
  code = ('import sys; import alexnet_tf.convert.cli, alexnet_tf.convert.worker; '
          'print("tensorflow" in sys.modules)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60, check=True)
  assert result.stdout.strip() == 'False'
