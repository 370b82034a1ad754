"""Any `<root>/<class>/<image>` tree: people's own images, for fine-tuning.

Two layouts are recognised:

  <root>/<class>/...          one pool of images; `validation_fraction` of every class is
                              held out (stratified, seeded) as the validation split.
  <root>/train/<class>/...    the splits as given, with optional validation/ (or val/) and
                              test/ beside train/; without a validation folder,
                              `validation_fraction` of train is held out as above.

Class folders are searched recursively for files with an image extension; hidden files
and other files are ignored. Labels 0..N-1 follow the sorted class names of train.
"""

import logging
import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

from alexnet_tf import records
from alexnet_tf.convert import images
from alexnet_tf.convert import split as split_lib
from alexnet_tf.convert import worker
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

IMAGE_EXTENSIONS = images.EXTENSIONS  # the files of images.ACCEPTED_FORMATS
# Folder names of each split, in order of preference; train/ marks the split layout.
SPLIT_DIRS = {records.TRAIN: ('train',), records.VALIDATION: ('validation', 'val'),
              records.TEST: ('test',)}
DEFAULT_VALIDATION_FRACTION = 0.1
EXAMPLES_PER_SHARD = 1024  # the default shard count of a split is ceil(images / this)

log = logging.getLogger(__name__)

# class name -> sorted absolute paths of its images
ClassFiles = Dict[str, List[str]]


def convert(root: str, output_dir: str, *, validation_fraction: Optional[float] = None,
            num_shards: Optional[Mapping[str, int]] = None, workers: Optional[int] = None,
            resize: int = 0, seed: int = 0, name: Optional[str] = None,
            overwrite: bool = False, progress: bool = True,
            max_pixels: int = images.DEFAULT_MAX_PIXELS) -> records.DatasetMetadata:
  """Converts a class-folder tree into `output_dir`.

  Args:
    root: the tree (either layout of the module docstring).
    output_dir: where the shards and metadata go.
    validation_fraction: the share of every class held out for validation when there is
      no validation folder; None: DEFAULT_VALIDATION_FRACTION. Must be None or 0 when
      there is one.
    num_shards: shards per split; by default ceil(images / EXAMPLES_PER_SHARD).
    workers: processes that encode images; None: the core count.
    resize: 0 keeps the original images; N stores N x N images (shorter side N, centre crop).
    seed: seeds the validation split and the assignment to shards.
    name: the dataset's name; None: the root folder's name.
    overwrite: delete an earlier conversion in `output_dir` first.
    progress: show a progress bar.
    max_pixels: images of more pixels are skipped (and listed), never decoded.

  Returns:
    The metadata written to dataset.json.

  Raises:
    ConversionError: `root` is missing, has no class folders, or a training class has no
      images.
  """
  # Checks the arguments before any work.
  options = worker.EncodeOptions(resize=resize, max_pixels=max_pixels)
  root = os.path.abspath(root)
  if os.path.commonpath([root, os.path.abspath(output_dir)]) == root:
    raise ConversionError(f'the output directory {output_dir} is inside the image tree {root}, '
                          f'where it would be taken for a class; put it elsewhere')
  classes, splits = scan(root, validation_fraction, seed)
  shards = {split: max(1, math.ceil(len(items) / EXAMPLES_PER_SHARD))
            for split, items in splits.items()}
  return writer.write_dataset(
      output_dir, name=name or os.path.basename(root), classes=classes, splits=splits,
      num_shards={**shards, **(num_shards or {})}, root=root, options=options,
      workers=workers, seed=seed, source=root, overwrite=overwrite, progress=progress)


def scan(root: str, validation_fraction: Optional[float] = None,
         seed: int = 0) -> Tuple[Tuple[str, ...], Dict[str, List[worker.Item]]]:
  """The class names and the images of each split under `root`."""
  if not os.path.isdir(root):
    raise ConversionError(f'{root}: no such directory')
  split_dirs = find_split_dirs(root)
  if split_dirs is None:
    pools = {records.TRAIN: list_classes(root)}
  else:
    pools = {split: list_classes(path, required=split == records.TRAIN)
             for split, path in split_dirs.items()}
  classes = tuple(sorted(pools[records.TRAIN]))
  for split, class_files in pools.items():
    unknown = sorted(set(class_files) - set(classes))
    if unknown:
      raise ConversionError(f'{split_dirs[split]}: classes {unknown} have no training folder '
                            f'in {split_dirs[records.TRAIN]}')
  splits = {split: _items(class_files, classes, root) for split, class_files in pools.items()}
  if records.VALIDATION in splits:
    if validation_fraction:
      raise ConversionError(f'{root} has a validation folder ({split_dirs[records.VALIDATION]});'
                            f' a validation fraction ({validation_fraction}) cannot be used too')
  else:
    fraction = (DEFAULT_VALIDATION_FRACTION if validation_fraction is None
                else validation_fraction)
    train = splits[records.TRAIN]
    kept, held_out = split_lib.stratified_split([item.label for item in train], fraction, seed)
    splits[records.TRAIN] = [train[i] for i in kept]
    splits[records.VALIDATION] = [train[i] for i in held_out]
  return classes, splits


def find_split_dirs(root: str) -> Optional[Dict[str, str]]:
  """{split: folder} if `root` has a train/ folder, else None (the root holds the classes)."""
  found = {}
  for split, names in SPLIT_DIRS.items():
    present = [name for name in names if os.path.isdir(os.path.join(root, name))]
    if len(present) > 1:
      raise ConversionError(f'{root}: both {present[0]}/ and {present[1]}/ exist; which one is '
                            f'the {split} split? Keep one of them')
    if present:
      found[split] = os.path.join(root, present[0])
  if records.TRAIN not in found:
    if found:
      raise ConversionError(f'{root} has {sorted(found.values())} but no train/ folder')
    return None
  return found


def list_classes(directory: str, required: bool = True) -> ClassFiles:
  """The images of each class folder of `directory`, searched recursively.

  Args:
    directory: holds one folder per class.
    required: whether a class folder without images is an error (training data) or only
      worth a warning (validation and test folders may lack a class).

  Raises:
    ConversionError: no class folders, or (if `required`) an empty one.
  """
  entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
  class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith('.')]
  if not class_dirs:
    raise ConversionError(f'{directory}: no class folders (expected {directory}/<class>/<image>)')
  loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
  if loose:
    log.warning('%s: ignoring %d images outside class folders (e.g. %s)', directory, len(loose),
                loose[0])
  result = {}
  for class_dir in class_dirs:
    files = image_files(class_dir.path)
    if files:
      result[class_dir.name] = files
    elif required:
      raise ConversionError(f'{class_dir.path}: class folder without images (looked for '
                            f'{", ".join(sorted(IMAGE_EXTENSIONS))})')
    else:
      log.warning('%s: class folder without images', class_dir.path)
  return result


def image_files(directory: str) -> List[str]:
  """The image files below `directory` (recursively, hidden ones excluded), sorted."""
  found, ignored = [], 0
  for parent, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if _is_image(name):
        found.append(os.path.join(parent, name))
      elif not name.startswith('.'):
        ignored += 1
  if ignored:
    log.info('%s: ignored %d files without an image extension', directory, ignored)
  return found


def _is_image(name: str) -> bool:
  return not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _items(class_files: ClassFiles, classes: Tuple[str, ...], root: str) -> List[worker.Item]:
  labels = {name: label for label, name in enumerate(classes)}
  return [worker.Item(os.path.relpath(path, root).replace(os.sep, '/'), labels[name])
          for name in sorted(class_files) for path in class_files[name]]
