"""ILSVRC-2012 (ImageNet) in the layout it is distributed in.

  <root>/train/<wnid>/*.JPEG   the training images of each class (the per-class tar files
                               of ILSVRC2012_img_train.tar, extracted)
  <root>/val/*.JPEG            ILSVRC2012_val_00000001.JPEG ... _00050000.JPEG, with labels
                               from `val_labels`; or val/<wnid>/*.JPEG, already sorted

`val_labels` may be any of the forms in circulation:

  - LOC_val_solution.csv (Kaggle): rows `ImageId,PredictionString`; the first word of the
    prediction string is the wnid.
  - The devkit's ILSVRC2012_validation_ground_truth.txt: the ILSVRC2012_ID (1..1000) of image
    1, 2, ... one per line. These ids are *not* in sorted-wnid order, so the devkit's synset
    order is needed too (`devkit_synsets`: its data/meta.mat, or a text file whose line i
    holds the wnid of ILSVRC2012_ID i).
  - One wnid per line for image 1, 2, ... (TF's imagenet_2012_validation_synset_labels.txt).

Labels 0..999 follow the sorted wnids unless `synsets` lists them (line i is label i; a list
of a subset converts only those classes). A synset-to-words file (synset_words.txt,
LOC_synset_mapping.txt: `<wnid> <words>` lines) gives the class names; without it the names
are the wnids. synsets.txt in the output holds the wnid of every label. Images are stored as
256x256 (shorter side 256, central crop, paper section 2) unless `resize` says otherwise.
"""

import csv
import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

from alexnet_tf import records
from alexnet_tf.convert import folder
from alexnet_tf.convert import images
from alexnet_tf.convert import worker
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

DEFAULT_RESIZE = 256
DEFAULT_SHARDS = {records.TRAIN: 1024, records.VALIDATION: 128}
SYNSETS_FILE = 'synsets.txt'
_WNID = re.compile(r'^n\d{8}$')
_VAL_NAME = 'ILSVRC2012_val_{:08d}'  # the stem of validation image number i (1-based)

log = logging.getLogger(__name__)


def convert(root: str, output_dir: str, *, val_labels: Optional[str] = None,
            devkit_synsets: Optional[str] = None, synsets: Optional[str] = None,
            synset_words: Optional[str] = None, num_shards: Optional[Mapping[str, int]] = None,
            workers: Optional[int] = None, resize: int = DEFAULT_RESIZE, seed: int = 0,
            overwrite: bool = False, progress: bool = True,
            max_pixels: int = images.DEFAULT_MAX_PIXELS) -> records.DatasetMetadata:
  """Converts ILSVRC-2012 into `output_dir`: train/ to `train`, val/ to `validation`.

  Args:
    root: the directory holding train/ and val/.
    output_dir: where the shards and metadata go.
    val_labels: the labels of a flat val/ folder, in a form of the module docstring.
    devkit_synsets: the devkit's meta.mat or a wnid-per-ILSVRC2012_ID text file; needed
      only with the devkit's ground-truth file.
    synsets: a file listing the wnids in label order; None: sorted train/ folder names.
    synset_words: a `<wnid> <words>` file for the class names; None: the wnids.
    num_shards: shards per split, overriding DEFAULT_SHARDS.
    workers: processes that encode images; None: the core count.
    resize: N stores N x N images (shorter side N, centre crop); 0 keeps the originals.
    seed: seeds the assignment of images to shards.
    overwrite: delete an earlier conversion in `output_dir` first.
    progress: show a progress bar.
    max_pixels: images of more pixels are skipped (and listed), never decoded.

  Returns:
    The metadata written to dataset.json.

  Raises:
    ConversionError: a missing folder or file, a label file that does not match the
      images, or a class without images.
  """
  # Checks the arguments before any work.
  options = worker.EncodeOptions(resize=resize, max_pixels=max_pixels)
  root = os.path.abspath(root)
  wnids = _class_wnids(root, synsets)
  labels = {wnid: label for label, wnid in enumerate(wnids)}
  splits = {records.TRAIN: _train_items(root, wnids)}
  val_dir = os.path.join(root, 'val')
  if os.path.isdir(val_dir):
    splits[records.VALIDATION] = _val_items(root, val_dir, labels, val_labels, devkit_synsets)
  else:
    log.warning('%s: no val/ folder; converting the training images only', root)
  words = read_synset_words(synset_words) if synset_words else {}
  classes = tuple(words.get(wnid, wnid) for wnid in wnids)
  return writer.write_dataset(
      output_dir, name='imagenet', classes=classes, splits=splits,
      num_shards={**DEFAULT_SHARDS, **(num_shards or {})}, root=root,
      options=options, workers=workers, seed=seed, source=root,
      overwrite=overwrite, progress=progress,
      extra_files={SYNSETS_FILE: ''.join(wnid + '\n' for wnid in wnids)})


def _class_wnids(root: str, synsets: Optional[str]) -> List[str]:
  """The wnids in label order: the `synsets` list, else the sorted train/ folders."""
  train_dir = os.path.join(root, 'train')
  if not os.path.isdir(train_dir):
    raise ConversionError(f'{train_dir}: no such directory (expected the ILSVRC-2012 layout '
                          f'{root}/train/<wnid>/*.JPEG)')
  entries = sorted(os.listdir(train_dir))
  folders = [name for name in entries
             if not name.startswith('.') and os.path.isdir(os.path.join(train_dir, name))]
  if not folders:
    tars = [name for name in entries if name.endswith('.tar')]
    hint = f' Extract the {len(tars)} per-class tar files first.' if tars else ''
    raise ConversionError(f'{train_dir}: no class folders.{hint}')
  if synsets is None:
    return folders
  wnids = read_synset_list(synsets)
  missing = sorted(set(wnids) - set(folders))
  if missing:
    raise ConversionError(f'{synsets} lists {len(missing)} synsets without a folder in '
                          f'{train_dir}: {missing[:5]}')
  extra = len(folders) - len(wnids)
  if extra:
    log.warning('%s: %d class folders are not in %s and are left out', train_dir, extra,
                synsets)
  return wnids


def _train_items(root: str, wnids: Sequence[str]) -> List[worker.Item]:
  items = []
  for label, wnid in enumerate(wnids):
    files = folder.image_files(os.path.join(root, 'train', wnid))
    if not files:
      raise ConversionError(f'{os.path.join(root, "train", wnid)}: class folder without images')
    items += [worker.Item(os.path.relpath(path, root), label) for path in files]
  return items


def _val_items(root: str, val_dir: str, labels: Mapping[str, int], val_labels: Optional[str],
               devkit_synsets: Optional[str]) -> List[worker.Item]:
  """The validation images, labelled by their folder or by `val_labels`."""
  class_dirs = sorted(name for name in os.listdir(val_dir)
                      if os.path.isdir(os.path.join(val_dir, name)) and _WNID.match(name))
  if class_dirs:  # already sorted into val/<wnid>/
    files = [(path, wnid) for wnid in class_dirs
             for path in folder.image_files(os.path.join(val_dir, wnid))]
  else:
    if val_labels is None:
      raise ConversionError(f'{val_dir}: the validation images need their labels: pass the '
                            f'devkit ground truth or LOC_val_solution.csv (--val-labels)')
    by_stem = read_val_labels(val_labels, devkit_synsets)
    files = []
    for path in folder.image_files(val_dir):
      stem = os.path.splitext(os.path.basename(path))[0]
      if stem not in by_stem:
        raise ConversionError(f'{val_labels} has no label for {path}')
      files.append((path, by_stem[stem]))
  outside = sum(wnid not in labels for _, wnid in files)
  if outside:
    log.warning('%s: %d validation images of classes outside the label set are left out',
                val_dir, outside)
  return [worker.Item(os.path.relpath(path, root), labels[wnid])
          for path, wnid in files if wnid in labels]


def read_synset_list(path: str) -> List[str]:
  """The wnids of a file with one per line (the first word of each non-empty line)."""
  wnids = [line.split()[0] for line in _read_lines(path)]
  _check_wnids(wnids, path)
  if len(set(wnids)) != len(wnids):
    raise ConversionError(f'{path}: lists a synset more than once')
  return wnids


def read_synset_words(path: str) -> Dict[str, str]:
  """{wnid: words} from `<wnid> <words>` lines (synset_words.txt, LOC_synset_mapping.txt)."""
  words = {}
  for line in _read_lines(path):
    parts = line.split(None, 1)
    _check_wnids(parts[:1], path)
    words[parts[0]] = parts[1].strip() if len(parts) > 1 else parts[0]
  return words


def read_val_labels(path: str, devkit_synsets: Optional[str] = None) -> Dict[str, str]:
  """{image stem, e.g. 'ILSVRC2012_val_00000001': wnid} from any form of the docstring."""
  lines = _read_lines(path)
  if path.lower().endswith('.csv') or lines[0].startswith('ImageId'):
    return _read_loc_solution(path)
  if all(line.isdigit() for line in lines):
    if devkit_synsets is None:
      raise ConversionError(
          f'{path} holds ILSVRC2012_IDs, which are not in sorted-wnid order: pass the '
          f'devkit\'s synset order too (data/meta.mat, --devkit-synsets)')
    by_id = read_devkit_synsets(devkit_synsets)
    unknown = sorted({int(line) for line in lines} - set(by_id))
    if unknown:
      raise ConversionError(f'{path}: ILSVRC2012_IDs {unknown[:5]} are not in {devkit_synsets}')
    return {_VAL_NAME.format(i + 1): by_id[int(line)] for i, line in enumerate(lines)}
  wnids = [line.split()[0] for line in lines]
  _check_wnids(wnids, path)
  return {_VAL_NAME.format(i + 1): wnid for i, wnid in enumerate(wnids)}


def read_devkit_synsets(path: str) -> Dict[int, str]:
  """{ILSVRC2012_ID: wnid} from the devkit's meta.mat or a wnid-per-line text file."""
  if not path.lower().endswith('.mat'):
    wnids = read_synset_list(path)
    return {i + 1: wnid for i, wnid in enumerate(wnids)}
  try:
    from scipy import io as scipy_io  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConversionError(f'reading {path} needs scipy (pip install scipy); or pass a text '
                          f'file with the wnid of ILSVRC2012_ID i on line i') from None
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file')
  try:
    synsets = scipy_io.loadmat(path, squeeze_me=True)['synsets']
    # The 1000 classes are the leaves of the devkit's synset tree.
    return {int(s['ILSVRC2012_ID']): str(s['WNID']) for s in synsets.ravel()
            if int(s['num_children']) == 0}
  except (KeyError, ValueError, TypeError, OSError) as error:
    raise ConversionError(f'{path}: not the ILSVRC-2012 devkit meta.mat ({error!r})') from None


def _read_loc_solution(path: str) -> Dict[str, str]:
  labels = {}
  with open(path, newline='', encoding='utf-8') as f:
    for row in csv.DictReader(f):
      try:
        labels[row['ImageId']] = row['PredictionString'].split()[0]
      except (KeyError, IndexError, AttributeError):
        raise ConversionError(f'{path}: expected ImageId,PredictionString rows like '
                              f'"ILSVRC2012_val_00000001,n01751748 ...", got {row}') from None
  _check_wnids(list(labels.values()), path)
  return labels


def _read_lines(path: str) -> List[str]:
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file')
  with open(path, encoding='utf-8') as f:
    lines = [line.strip() for line in f if line.strip()]
  if not lines:
    raise ConversionError(f'{path}: the file is empty')
  return lines


def _check_wnids(wnids: Sequence[str], path: str) -> None:
  bad = [wnid for wnid in wnids if not _WNID.match(wnid)]
  if bad:
    raise ConversionError(f'{path}: {bad[0]!r} is not a WordNet id like n01440764')
