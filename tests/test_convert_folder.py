"""Folder mode on CIFAR-10-shaped JPEG trees: the `cifar10_jpeg_subset` fixture (real CIFAR-10,
or photo patches without the shared data; see conftest.py)."""

import collections
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from alexnet_tf import records
from alexnet_tf.convert import folder
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError
from conftest import CIFAR10_CLASSES, CIFAR10_SUBSET_PER_CLASS
import photos


@pytest.fixture(scope='module')
def converted(cifar10_subset_records, read_split):
  """The session's converted subset (validation fraction 0.2) with its examples read back."""
  return cifar10_subset_records, {split: read_split(cifar10_subset_records, split)
                                  for split in (records.TRAIN, records.VALIDATION)}


def test_counts_classes_and_metadata(converted):
  data_dir, _ = converted
  metadata = records.read_metadata(str(data_dir))
  assert metadata.name == 'cifar10-jpeg'
  assert metadata.classes == CIFAR10_CLASSES
  assert metadata.counts == {records.TRAIN: 240, records.VALIDATION: 60}
  assert metadata.num_shards == {records.TRAIN: 4, records.VALIDATION: 2}
  assert metadata.image_size == (32, 32)
  assert (data_dir / records.LABELS_FILE).read_text().split('\n')[:-1] == list(CIFAR10_CLASSES)
  assert (data_dir / writer.SKIPPED_FILE).read_text() == 'split\tfilename\treason\n'
  assert len(records.shard_files(str(data_dir), records.TRAIN)) == 4


def test_labels_round_trip(converted, cifar10_jpeg_subset):
  _, examples = converted
  seen = set()
  for split, per_class in ((records.TRAIN, 24), (records.VALIDATION, 6)):
    labels = collections.Counter()
    for ex in examples[split]:
      filename = ex[records.FILENAME].decode()
      _, class_name, _ = filename.split('/')  # train/<class>/<nnnn>.jpg
      label = ex[records.LABEL]
      assert CIFAR10_CLASSES[label] == class_name == ex[records.LABEL_TEXT].decode()
      # Valid RGB JPEGs are stored untouched.
      source = (cifar10_jpeg_subset / filename).read_bytes()
      assert ex[records.IMAGE_ENCODED] == source
      assert ex[records.IMAGE_FORMAT] == b'jpeg'
      assert (ex[records.IMAGE_HEIGHT], ex[records.IMAGE_WIDTH]) == (32, 32)
      labels[label] += 1
      seen.add(filename)
    assert labels == {label: per_class for label in range(10)}  # stratified
  assert len(seen) == 10 * CIFAR10_SUBSET_PER_CLASS  # every image exactly once


def test_decoded_image_matches_the_source(converted, cifar10_jpeg_subset):
  _, examples = converted
  ex = examples[records.VALIDATION][0]
  pixels = ex['pixels']
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
  source = np.asarray(Image.open(cifar10_jpeg_subset / ex[records.FILENAME].decode()))
  # TensorFlow decodes with libjpeg's fast integer DCT by default, Pillow with the accurate
  # one: a few levels of difference here and there.
  difference = np.abs(pixels.astype(int) - source)
  assert difference.mean() < 1.5 and difference.max() <= 8
  assert pixels.std() > 10  # a real photo, not a constant


def test_shards_mix_the_classes(converted):
  data_dir, examples = converted
  files = records.shard_files(str(data_dir), records.TRAIN)
  per_shard = 240 // len(files)
  for start in range(0, 240, per_shard):
    assert len({ex[records.LABEL] for ex in examples[records.TRAIN][start:start + per_shard]}) >= 6


def test_colour_statistics_and_mean_image_of_the_training_split(converted, cifar10_jpeg_subset):
  data_dir, examples = converted
  train = np.stack([np.asarray(Image.open(cifar10_jpeg_subset / ex[records.FILENAME].decode()))
                    for ex in examples[records.TRAIN]]).astype(np.float64)
  metadata = records.read_metadata(str(data_dir))
  color = metadata.color_stats
  flat = train.reshape(-1, 3)
  assert color.num_pixels == 240 * 32 * 32
  np.testing.assert_allclose(color.mean_rgb, flat.mean(axis=0), rtol=1e-9)
  values = np.linalg.eigvalsh(np.cov(flat, rowvar=False, bias=True))[::-1]
  np.testing.assert_allclose(color.eigenvalues, values, rtol=1e-9)
  vectors = np.array(color.eigenvectors)
  np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-9)
  np.testing.assert_allclose(records.read_mean_image(str(data_dir)), train.mean(axis=0),
                             rtol=1e-6)


def test_workers_do_not_change_the_output(cifar10_subset_records, cifar10_jpeg_subset, tmp_path):
  """Two spawned worker processes write the same bytes as the in-process path."""
  metadata = folder.convert(str(cifar10_jpeg_subset), str(tmp_path), validation_fraction=0.2,
                            num_shards={'train': 4, 'validation': 2}, workers=2, progress=False)
  assert metadata == records.read_metadata(str(cifar10_subset_records))
  for name in sorted(os.listdir(cifar10_subset_records)):
    if os.path.isfile(cifar10_subset_records / name):
      assert (tmp_path / name).read_bytes() == (cifar10_subset_records / name).read_bytes(), name


def test_the_photo_stand_in_is_encoded_as_the_real_tree(cifar10_jpeg_subset, tmp_path):
  """Without the shared data every test reads photos.write_photo_tree's files instead; they
  have the tarball's names, size and encoding (quality 75, 4:2:0), so the tests see the same
  kind of file either way. (Trivially true in a session that reads the stand-in itself.)"""
  stand_in = photos.write_photo_tree(tmp_path, CIFAR10_CLASSES[:2], 3)
  made = sorted(stand_in.rglob('*.jpg'))
  assert len(made) == 6
  for path in made:
    ours, real = Image.open(path), Image.open(cifar10_jpeg_subset / path.relative_to(stand_in))
    assert (ours.format, ours.size, ours.mode) == (real.format, real.size, real.mode) == (
        'JPEG', (32, 32), 'RGB')
    assert get_sampling(ours) == get_sampling(real) and ours.quantization == real.quantization


@pytest.fixture
def split_tree(cifar10_jpeg_subset, tmp_path):
  """root/{train,val,test}/<class>/: 20, 5 and 5 images of each of three classes."""
  root = tmp_path / 'tree'
  for class_name in CIFAR10_CLASSES[:3]:
    files = sorted((cifar10_jpeg_subset / 'train' / class_name).iterdir())
    for split, chosen in (('train', files[:20]), ('val', files[20:25]), ('test', files[25:])):
      (root / split / class_name).mkdir(parents=True)
      for path in chosen:
        shutil.copy(path, root / split / class_name / path.name)
  return root


def test_split_folders_are_the_splits(split_tree, tmp_path, read_split):
  out = tmp_path / 'out'
  metadata = folder.convert(str(split_tree), str(out), workers=1, progress=False, name='three')
  assert metadata.name == 'three' and metadata.classes == CIFAR10_CLASSES[:3]
  assert metadata.counts == {records.TRAIN: 60, records.VALIDATION: 15, records.TEST: 15}
  filenames = {ex[records.FILENAME].decode().split('/')[0]
               for ex in read_split(out, records.VALIDATION)}
  assert filenames == {'val'}
  with pytest.raises(ConversionError, match='cannot be used too'):
    folder.convert(str(split_tree), str(out), validation_fraction=0.1, workers=1)


def test_flat_class_root_with_resize_and_junk(split_tree, tmp_path):
  root = split_tree / 'train'
  (root / 'airplane' / 'notes.txt').write_text('not an image')
  (root / 'airplane' / '.DS_Store').write_bytes(b'\0')
  (root / 'bird' / 'broken.jpg').write_bytes(b'')
  metadata = folder.convert(str(root), str(tmp_path / 'out'), validation_fraction=0.1,
                            resize=48, workers=1, progress=False)
  assert sum(metadata.counts.values()) == 60  # 61 files, one of them empty
  assert metadata.image_size == (48, 48)
  assert np.load(tmp_path / 'out' / records.MEAN_IMAGE_FILE).shape == (48, 48, 3)
  skipped = (tmp_path / 'out' / writer.SKIPPED_FILE).read_text().splitlines()
  assert len(skipped) == 2 and skipped[1].startswith(('train\tbird/broken.jpg\tempty file',
                                                       'validation\tbird/broken.jpg\tempty file'))


def test_mixed_sizes_have_no_image_size_or_mean(split_tree, tmp_path):
  photo = Image.open(next((split_tree / 'train' / 'airplane').iterdir())).resize((40, 30))
  photo.save(split_tree / 'train' / 'airplane' / 'big.png')
  out = tmp_path / 'out'
  (out).mkdir()
  (out / records.MEAN_IMAGE_FILE).write_bytes(b'stale')
  metadata = folder.convert(str(split_tree), str(out), workers=1, progress=False)
  assert metadata.image_size is None and metadata.color_stats is not None
  assert not (out / records.MEAN_IMAGE_FILE).exists()
  stored = json.loads((out / records.METADATA_FILE).read_text())
  assert stored['image_size'] is None


def test_problems_name_the_path(tmp_path):
  with pytest.raises(ConversionError, match=f'{tmp_path}/missing: no such directory'):
    folder.convert(str(tmp_path / 'missing'), str(tmp_path / 'out'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ConversionError, match=f'{tmp_path}/empty: no class folders'):
    folder.convert(str(tmp_path / 'empty'), str(tmp_path / 'out'))
  (tmp_path / 'root' / 'cat').mkdir(parents=True)
  (tmp_path / 'root' / 'dog').mkdir()
  Image.new('RGB', (4, 4)).save(tmp_path / 'root' / 'dog' / 'a.jpg')
  with pytest.raises(ConversionError, match=f'{tmp_path}/root/cat: class folder without images'):
    folder.convert(str(tmp_path / 'root'), str(tmp_path / 'out'))
  with pytest.raises(ConversionError, match='output directory .*/root/out is inside the image'):
    folder.convert(str(tmp_path / 'root'), str(tmp_path / 'root' / 'out'))
  with pytest.raises(ConversionError, match='resize must be >= 0'):
    folder.convert(str(tmp_path / 'root'), str(tmp_path / 'out'), resize=-1)
  (tmp_path / 'root' / 'cat').rmdir()
  with pytest.raises(ConversionError, match='number of shards must be >= 1'):
    folder.convert(str(tmp_path / 'root'), str(tmp_path / 'out'), num_shards={'train': 0})
  (tmp_path / 'root' / 'val').mkdir()
  with pytest.raises(ConversionError, match='no train/ folder'):
    folder.convert(str(tmp_path / 'root'), str(tmp_path / 'out'))


def test_png_and_other_formats_become_jpeg(tmp_path, read_split):
  root = tmp_path / 'root'
  colours = {'red': (255, 0, 0), 'green': (0, 255, 0)}
  for name, colour in colours.items():
    (root / name).mkdir(parents=True)
    for i, fmt in enumerate(['PNG', 'BMP', 'GIF', 'TIFF']):
      Image.new('RGB', (10, 6), colour).save(root / name / f'{i}.{fmt.lower()}', format=fmt)
  folder.convert(str(root), str(tmp_path / 'out'), validation_fraction=0, workers=1,
                 progress=False)
  examples = read_split(tmp_path / 'out', records.TRAIN)
  assert len(examples) == 8
  for ex in examples:
    assert ex[records.IMAGE_FORMAT] == b'jpeg' and ex['pixels'].shape == (6, 10, 3)
    colour = colours[ex[records.LABEL_TEXT].decode()]
    assert np.abs(ex['pixels'].reshape(-1, 3).mean(axis=0) - colour).max() < 3
  assert Image.open(io.BytesIO(examples[0][records.IMAGE_ENCODED])).format == 'JPEG'
