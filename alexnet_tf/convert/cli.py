"""Command line of the converters: `python tools/make_tfrecords.py --dataset ... --output-dir ...`.

  --dataset cifar10   [--source URL|ARCHIVE|DIR] [--validation-fraction 0.1]
  --dataset imagenet  --source ROOT [--val-labels FILE] [--devkit-synsets FILE]
                      [--synsets FILE] [--synset-words FILE]
  --dataset folder    --source ROOT [--validation-fraction 0.1] [--name NAME]

Re-running the same command resumes an interrupted conversion. Problems with the data are
reported in one line without a traceback, with exit status 1 (2 for bad flags); --verbose
adds the traceback.
"""

import argparse
import logging
import os
import re
import sys
import traceback
from typing import List, Optional

from tqdm.contrib import logging as tqdm_logging

from alexnet_tf import cli_logging, records
from alexnet_tf.convert import cifar10
from alexnet_tf.convert import folder
from alexnet_tf.convert import images
from alexnet_tf.convert import imagenet
from alexnet_tf.convert import writer
from alexnet_tf.convert.errors import ConversionError

DATASETS = ('cifar10', 'imagenet', 'folder')
# Flags that only one dataset understands (their destinations; all default to None).
_DATASET_FLAGS = {
    'cifar10': ('download_dir', 'md5', 'no_md5_check'),
    'imagenet': ('val_labels', 'devkit_synsets', 'synsets', 'synset_words'),
    'folder': ('name',),
}
_FRACTION_DATASETS = ('cifar10', 'folder')
_FILE_DATASETS = ('imagenet', 'folder')  # whose images are files (--max-pixels)

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
  return value


def _non_negative_int(text: str) -> int:
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f'must be >= 0, got {value}')
  return value


def _fraction(text: str) -> float:
  value = float(text)
  if not 0.0 <= value < 1.0:
    raise argparse.ArgumentTypeError(f'must be in [0, 1), got {value}')
  return value


def _max_pixels(text: str) -> int:
  value = _positive_int(text)
  if value > images.MAX_PIXELS:
    raise argparse.ArgumentTypeError(f'at most {images.MAX_PIXELS} (what training decodes), '
                                     f'got {value}')
  return value


def _md5(text: str) -> str:
  if not re.fullmatch(r'[0-9a-fA-F]{32}', text):
    raise argparse.ArgumentTypeError(f'expected 32 hex digits, got {text!r} (--no-md5-check '
                                     f'skips the check)')
  return text.lower()


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='make_tfrecords.py',
      description='Converts CIFAR-10, ILSVRC-2012 or a class-folder tree into sharded '
                  'TFRecords with dataset.json, labels.txt and training-set colour statistics.')
  parser.add_argument('--dataset', required=True, choices=DATASETS)
  parser.add_argument('--source',
                      help='cifar10: URL, cifar-10-python.tar.gz or cifar-10-batches-py/ '
                           f'(default: {cifar10.URL}); imagenet: the folder with train/ and '
                           'val/; folder: the root of <class>/<image> or train/<class>/<image>')
  parser.add_argument('--output-dir', required=True, help='where shards and metadata go')
  for split in records.SPLITS:
    parser.add_argument(f'--{split}-shards', type=_positive_int, metavar='N',
                        help=f'number of {split} shards (default: per dataset)')
  parser.add_argument('--workers', type=_positive_int, metavar='N',
                      help=f'image encoding processes (default: the core count, '
                           f'{writer.default_workers()} here)')
  parser.add_argument('--resize', type=_non_negative_int, metavar='N',
                      help='store N x N images: shorter side N, then the central crop; 0 keeps '
                           f'the originals (default: imagenet {imagenet.DEFAULT_RESIZE}, else 0)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seeds the validation split and the shuffling into shards')
  parser.add_argument('--validation-fraction', type=_fraction, metavar='F',
                      help='cifar10, folder: share of each training class held out for '
                           f'validation (default: {cifar10.DEFAULT_VALIDATION_FRACTION}; a '
                           'folder tree with a validation/ folder uses that instead)')
  parser.add_argument('--max-pixels', type=_max_pixels, metavar='N',
                      help='imagenet, folder: images of more pixels (width x height, read from '
                           'the header) are skipped and listed, never decoded (default: '
                           f'{images.DEFAULT_MAX_PIXELS}, the serving limit; at most '
                           f'{images.MAX_PIXELS}, what training decodes)')
  parser.add_argument('--overwrite', action='store_true',
                      help='delete an earlier conversion in --output-dir instead of resuming it')
  parser.add_argument('--no-progress', dest='progress', action='store_false',
                      help='no progress bars')
  parser.add_argument('--verbose', '-v', action='store_true',
                      help='debug logging, and the traceback of an error')

  group = parser.add_argument_group('cifar10')
  group.add_argument('--download-dir', help='where a URL is downloaded (default: --output-dir)')
  group.add_argument('--md5', type=_md5, help=f'expected MD5 of the archive, downloaded or '
                                              f'local (default: the official {cifar10.MD5})')
  group.add_argument('--no-md5-check', action='store_true', default=None,
                     help='convert an archive whatever its MD5 (a warning says so)')
  group = parser.add_argument_group('imagenet')
  group.add_argument('--val-labels',
                     help='labels of a flat val/: LOC_val_solution.csv, the devkit\'s '
                          'ILSVRC2012_validation_ground_truth.txt, or one wnid per line')
  group.add_argument('--devkit-synsets',
                     help='with the devkit ground truth: the devkit\'s data/meta.mat, or a file '
                          'with the wnid of ILSVRC2012_ID i on line i')
  group.add_argument('--synsets', help='wnids in label order (default: sorted train/ folders)')
  group.add_argument('--synset-words',
                     help='"<wnid> <words>" lines (synset_words.txt, LOC_synset_mapping.txt) '
                          'for the class names')
  group = parser.add_argument_group('folder')
  group.add_argument('--name', help='the dataset name (default: the root folder\'s name)')
  return parser


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  for dataset, flags in _DATASET_FLAGS.items():
    for flag in flags:
      if dataset != args.dataset and getattr(args, flag) is not None:
        parser.error(f'--{flag.replace("_", "-")} applies to --dataset {dataset} only')
  if args.md5 and args.no_md5_check:
    parser.error('--md5 and --no-md5-check contradict each other')
  if args.max_pixels is not None and args.dataset not in _FILE_DATASETS:
    parser.error('--max-pixels applies to --dataset imagenet and folder (CIFAR-10 is 32x32)')
  if args.validation_fraction is not None and args.dataset not in _FRACTION_DATASETS:
    parser.error('--validation-fraction does not apply to imagenet (its val/ is the '
                 'validation split)')
  if args.dataset != 'cifar10' and not args.source:
    parser.error(f'--dataset {args.dataset} needs --source')


def convert(args: argparse.Namespace) -> records.DatasetMetadata:
  """Runs the converter the parsed flags ask for."""
  num_shards = {split: getattr(args, f'{split}_shards') for split in records.SPLITS
                if getattr(args, f'{split}_shards') is not None}
  common = dict(num_shards=num_shards, workers=args.workers, seed=args.seed,
                overwrite=args.overwrite, progress=args.progress)
  limit = dict(max_pixels=args.max_pixels or images.DEFAULT_MAX_PIXELS)
  if args.dataset == 'cifar10':
    fraction = args.validation_fraction
    return cifar10.convert(
        args.source, args.output_dir,
        validation_fraction=cifar10.DEFAULT_VALIDATION_FRACTION if fraction is None else fraction,
        resize=args.resize or 0, download_dir=args.download_dir,
        md5=None if args.no_md5_check else (args.md5 or cifar10.MD5), **common)
  if args.dataset == 'imagenet':
    return imagenet.convert(
        args.source, args.output_dir, val_labels=args.val_labels,
        devkit_synsets=args.devkit_synsets, synsets=args.synsets,
        synset_words=args.synset_words,
        resize=imagenet.DEFAULT_RESIZE if args.resize is None else args.resize, **common,
        **limit)
  return folder.convert(args.source, args.output_dir,
                        validation_fraction=args.validation_fraction, resize=args.resize or 0,
                        name=args.name, **common, **limit)


def summary(metadata: records.DatasetMetadata, output_dir: str) -> str:
  """The final lines printed on success."""
  counts = ', '.join(f'{split} {count}' for split, count in metadata.counts.items())
  size = ('{}x{}'.format(*metadata.image_size) if metadata.image_size
          else 'images of different sizes')
  lines = [f'{metadata.name}: {counts} examples, {metadata.num_classes} classes, {size} '
           f'-> {output_dir}']
  with open(os.path.join(output_dir, writer.SKIPPED_FILE), encoding='utf-8') as f:
    num_skipped = sum(1 for _ in f) - 1  # the header
  if num_skipped:
    lines.append(f'skipped {num_skipped} unusable images, listed with the reason in '
                 f'{os.path.join(output_dir, writer.SKIPPED_FILE)}')
  return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  """The console entry point; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  _check_flags(parser, args)
  # Before TensorFlow is imported (to write the shards): it would flood stderr otherwise.
  cli_logging.setup(verbose=args.verbose)
  try:
    with tqdm_logging.logging_redirect_tqdm():
      metadata = convert(args)
  except (ConversionError, OSError) as error:  # OSError: e.g. the disk filled up
    if args.verbose:
      traceback.print_exc()
    print(f'error: {cli_logging.one_line(error)}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print('\ninterrupted: run the same command again to resume', file=sys.stderr)
    return 130
  print(summary(metadata, args.output_dir))
  return 0
