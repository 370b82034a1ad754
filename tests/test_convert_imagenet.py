"""ImageNet mode on a fake ILSVRC-2012 layout built from real photos (scikit-image's samples),
with the problem files ImageNet really has: CMYK and grayscale JPEGs, a PNG named .JPEG, plus
a truncated and an empty file."""

import io
import logging

import numpy as np
import pytest
import scipy.io
import skimage.data
from PIL import Image

from alexnet_tf import records
from alexnet_tf.convert import images
from alexnet_tf.convert import imagenet
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

TENCH, GOLDFISH, SHARK = 'n01440764', 'n01443537', 'n01484850'
WORDS = {TENCH: 'tench, Tinca tinca', GOLDFISH: 'goldfish, Carassius auratus',
         SHARK: 'great white shark, white shark, man-eater'}
# The devkit numbers the classes in its own order, not in sorted-wnid order.
DEVKIT_ORDER = (SHARK, TENCH, GOLDFISH)  # ILSVRC2012_ID 1, 2, 3
VAL_WNIDS = (SHARK, TENCH, GOLDFISH, TENCH)  # of ILSVRC2012_val_00000001 .. 4


def _file(array, image_format='JPEG', mode=None):
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, quality=92)
  return buffer.getvalue()


@pytest.fixture(scope='module')
def photos():
  return {'astronaut': skimage.data.astronaut(), 'coffee': skimage.data.coffee(),
          'chelsea': skimage.data.chelsea(), 'rocket': skimage.data.rocket(),
          'camera': np.stack([skimage.data.camera()] * 3, axis=-1)}


@pytest.fixture(scope='module')
def ilsvrc(tmp_path_factory, photos):
  """root/train/<wnid>/*.JPEG and a flat root/val/, plus the label files in every form."""
  root = tmp_path_factory.mktemp('ilsvrc')
  astronaut_jpeg = _file(photos['astronaut'])
  train = {
      TENCH: {'1': astronaut_jpeg, '2': _file(photos['coffee']),
              'cmyk': _file(photos['chelsea'], mode='CMYK')},
      GOLDFISH: {'1': _file(photos['rocket']), 'gray': _file(photos['camera'], mode='L'),
                 'png': _file(photos['coffee'], 'PNG'),
                 'truncated': astronaut_jpeg[:len(astronaut_jpeg) // 2], 'empty': b''},
      SHARK: {'1': _file(photos['chelsea']), '2': _file(photos['rocket'][:300])},
  }
  for wnid, files in train.items():
    (root / 'train' / wnid).mkdir(parents=True)
    for name, data in files.items():
      (root / 'train' / wnid / f'{wnid}_{name}.JPEG').write_bytes(data)
  (root / 'val').mkdir()
  for i, name in enumerate(['chelsea', 'astronaut', 'camera', 'coffee']):
    mode = 'L' if name == 'camera' else None
    (root / 'val' / f'ILSVRC2012_val_{i + 1:08d}.JPEG').write_bytes(_file(photos[name],
                                                                          mode=mode))
  labels = root / 'labels'
  labels.mkdir()
  rows = [f'ILSVRC2012_val_{i + 1:08d},{wnid} 10 20 200 220' for i, wnid in enumerate(VAL_WNIDS)]
  (labels / 'LOC_val_solution.csv').write_text('ImageId,PredictionString\n' +
                                               '\n'.join(reversed(rows)) + '\n')
  (labels / 'ground_truth.txt').write_text(
      ''.join(f'{DEVKIT_ORDER.index(wnid) + 1}\n' for wnid in VAL_WNIDS))
  (labels / 'devkit_synsets.txt').write_text(''.join(w + '\n' for w in DEVKIT_ORDER))
  (labels / 'val_synsets.txt').write_text(''.join(w + '\n' for w in VAL_WNIDS))
  (labels / 'synset_words.txt').write_text(''.join(f'{w} {WORDS[w]}\n' for w in sorted(WORDS)))
  _write_meta_mat(labels / 'meta.mat')
  return root


def _write_meta_mat(path):
  """The devkit's data/meta.mat: a `synsets` struct array; only leaves are the classes."""
  fields = [('ILSVRC2012_ID', 'O'), ('WNID', 'O'), ('words', 'O'), ('num_children', 'O')]
  entries = [(i + 1, wnid, WORDS[wnid], 0) for i, wnid in enumerate(DEVKIT_ORDER)]
  entries.append((1001, 'n00001740', 'entity', 3))  # an inner node of the hierarchy
  scipy.io.savemat(str(path), {'synsets': np.array(entries, dtype=fields)})


@pytest.fixture(scope='module')
def converted(ilsvrc, tmp_path_factory, read_split):
  out = tmp_path_factory.mktemp('imagenet_records')
  metadata = imagenet.convert(str(ilsvrc), str(out),
                              val_labels=str(ilsvrc / 'labels' / 'LOC_val_solution.csv'),
                              synset_words=str(ilsvrc / 'labels' / 'synset_words.txt'),
                              workers=1, progress=False)
  return metadata, out, {split: read_split(out, split)
                         for split in (records.TRAIN, records.VALIDATION)}


def test_metadata(converted):
  metadata, out, _ = converted
  assert metadata == records.read_metadata(str(out))
  assert metadata.name == 'imagenet'
  assert metadata.classes == tuple(WORDS[w] for w in sorted(WORDS))  # sorted-wnid order
  assert (out / imagenet.SYNSETS_FILE).read_text() == f'{TENCH}\n{GOLDFISH}\n{SHARK}\n'
  assert metadata.counts == {records.TRAIN: 8, records.VALIDATION: 4}
  assert metadata.image_size == (256, 256)  # the paper's preprocessing is the default
  assert records.read_mean_image(str(out)).shape == (256, 256, 3)
  assert metadata.color_stats.num_pixels == 8 * 256 * 256


def test_bad_files_are_skipped_and_reported(converted, ilsvrc, tmp_path, caplog):
  _, out, _ = converted
  lines = (out / writer.SKIPPED_FILE).read_text().splitlines()
  assert lines[0] == 'split\tfilename\treason'
  reasons = {line.split('\t')[1]: line.split('\t')[2] for line in lines[1:]}
  assert set(reasons) == {f'train/{GOLDFISH}/{GOLDFISH}_truncated.JPEG',
                          f'train/{GOLDFISH}/{GOLDFISH}_empty.JPEG'}
  assert reasons[f'train/{GOLDFISH}/{GOLDFISH}_empty.JPEG'] == 'empty file (0 bytes)'
  assert 'truncated' in reasons[f'train/{GOLDFISH}/{GOLDFISH}_truncated.JPEG']
  # The summary repeats them; a re-run resumes every shard and says the same.
  with caplog.at_level(logging.INFO):
    imagenet.convert(str(ilsvrc), str(out),
                     val_labels=str(ilsvrc / 'labels' / 'LOC_val_solution.csv'),
                     synset_words=str(ilsvrc / 'labels' / 'synset_words.txt'), workers=1,
                     progress=False)
  assert 'skipped 2 unusable images' in caplog.text
  assert f'{GOLDFISH}_empty.JPEG: empty file' in caplog.text
  assert '0 of' not in caplog.text and 'were already written' in caplog.text


def test_every_image_is_a_256_rgb_jpeg_with_the_right_label(converted):
  _, _, examples = converted
  for ex in examples[records.TRAIN]:
    wnid = ex[records.FILENAME].decode().split('/')[1]
    assert ex[records.LABEL] == sorted(WORDS).index(wnid)
    assert ex[records.LABEL_TEXT].decode() == WORDS[wnid]
    assert ex[records.IMAGE_FORMAT] == b'jpeg'
    assert Image.open(io.BytesIO(ex[records.IMAGE_ENCODED])).mode == 'RGB'
    assert ex['pixels'].shape == (256, 256, 3)
    assert (ex[records.IMAGE_HEIGHT], ex[records.IMAGE_WIDTH]) == (256, 256)
  val = {ex[records.FILENAME].decode(): ex[records.LABEL] for ex in examples[records.VALIDATION]}
  assert val == {f'val/ILSVRC2012_val_{i + 1:08d}.JPEG': sorted(WORDS).index(wnid)
                 for i, wnid in enumerate(VAL_WNIDS)}


def _stored(examples, name):
  return next(ex['pixels'] for ex in examples[records.TRAIN]
              if ex[records.FILENAME].decode().endswith(name)).astype(np.float64)


def _expected(photo):
  return np.asarray(images.resize_center_crop(Image.fromarray(photo), 256), np.float64)


def test_cmyk_grayscale_and_png_are_converted_faithfully(converted, photos):
  _, _, examples = converted
  assert np.abs(_stored(examples, '_cmyk.JPEG') - _expected(photos['chelsea'])).mean() < 4
  gray = _stored(examples, '_gray.JPEG')
  assert np.abs(gray - _expected(photos['camera'])).mean() < 4
  assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 2  # still gray
  assert np.abs(_stored(examples, '_png.JPEG') - _expected(photos['coffee'])).mean() < 4


@pytest.mark.parametrize('labels, devkit', [
    ('LOC_val_solution.csv', None), ('ground_truth.txt', 'meta.mat'),
    ('ground_truth.txt', 'devkit_synsets.txt'), ('val_synsets.txt', None)])
def test_every_form_of_validation_labels(ilsvrc, labels, devkit):
  folder = ilsvrc / 'labels'
  by_stem = imagenet.read_val_labels(str(folder / labels), devkit and str(folder / devkit))
  assert by_stem == {f'ILSVRC2012_val_{i + 1:08d}': w for i, w in enumerate(VAL_WNIDS)}


def test_devkit_ids_need_the_devkit_order(ilsvrc):
  with pytest.raises(ConversionError, match='not in sorted-wnid order'):
    imagenet.read_val_labels(str(ilsvrc / 'labels' / 'ground_truth.txt'))


def test_synset_list_sets_the_labels_and_can_select_classes(ilsvrc, tmp_path, read_split):
  synsets = tmp_path / 'synsets.txt'
  synsets.write_text(f'{SHARK}\n{TENCH}\n')
  metadata = imagenet.convert(str(ilsvrc), str(tmp_path / 'out'),
                              val_labels=str(ilsvrc / 'labels' / 'val_synsets.txt'),
                              synsets=str(synsets), resize=32, workers=1, progress=False)
  assert metadata.classes == (SHARK, TENCH) and metadata.image_size == (32, 32)
  assert metadata.counts == {records.TRAIN: 5, records.VALIDATION: 3}
  for ex in read_split(tmp_path / 'out', records.VALIDATION):
    assert ex[records.LABEL_TEXT].decode() == (SHARK, TENCH)[ex[records.LABEL]]


def test_sorted_val_folders_need_no_label_file(ilsvrc, tmp_path):
  root = tmp_path / 'root'
  root.mkdir()
  (root / 'train').symlink_to(ilsvrc / 'train')
  for i, wnid in enumerate(VAL_WNIDS):
    (root / 'val' / wnid).mkdir(parents=True, exist_ok=True)
    name = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
    (root / 'val' / wnid / name).symlink_to(ilsvrc / 'val' / name)
  metadata = imagenet.convert(str(root), str(tmp_path / 'out'), resize=16, workers=1,
                              progress=False)
  assert metadata.counts[records.VALIDATION] == 4 and metadata.classes == tuple(sorted(WORDS))


def test_problems_name_the_path(ilsvrc, tmp_path):
  with pytest.raises(ConversionError, match=f'{tmp_path}/train: no such directory'):
    imagenet.convert(str(tmp_path), str(tmp_path / 'out'))
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / f'{TENCH}.tar').write_bytes(b'')
  with pytest.raises(ConversionError, match='Extract the 1 per-class tar files'):
    imagenet.convert(str(tmp_path), str(tmp_path / 'out'))
  with pytest.raises(ConversionError, match='need their labels'):
    imagenet.convert(str(ilsvrc), str(tmp_path / 'out'))
  short = tmp_path / 'short.txt'
  short.write_text(f'{SHARK}\n{TENCH}\n')
  with pytest.raises(ConversionError, match='has no label for .*ILSVRC2012_val_00000003'):
    imagenet.convert(str(ilsvrc), str(tmp_path / 'out'), val_labels=str(short))
  with pytest.raises(ConversionError, match='not a WordNet id'):
    imagenet.read_synset_list(str(ilsvrc / 'labels' / 'LOC_val_solution.csv'))
