"""Conversion rate (images/s) of the converter on the 50,000-image CIFAR-10 JPEG tree.

Run by hand, from the repository root:

  python benchmarks/bench_convert.py --output convert.json            # the full tree
  python benchmarks/bench_convert.py --limit 50 --output smoke.json   # a smoke run

The tree (../shared/data/cifar10-train-jpeg.tar.gz: train/<class>/<nnnn>.jpg, 32x32 RGB
JPEGs) is extracted to a temporary directory and converted in folder mode, as
`tools/make_tfrecords.py --dataset folder` would (validation fraction 0.1, originals kept).
The rate counts the conversion alone: scanning, worker start-up, the parent's TensorFlow
import, decoding, statistics and writing; not the extraction. The machine is often shared,
so the load average at the start goes into the result too.
"""

import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import shutil
import sys
import tarfile
import tempfile
import time

import numpy as np
import PIL

from alexnet_tf import records
from alexnet_tf.convert import folder
from alexnet_tf.convert import writer

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_TARBALL = REPO.parent / 'shared' / 'data' / 'cifar10-train-jpeg.tar.gz'
VALIDATION_FRACTION = 0.1


def extract(tarball: pathlib.Path, dest: pathlib.Path, limit: int) -> pathlib.Path:
  """Extracts the tree (at most `limit` images per class if limit > 0); returns its root."""
  taken, root = {}, None
  with tarfile.open(tarball) as archive:
    for member in archive:
      parts = member.name.split('/')  # cifar10-jpeg/train/<class>/<nnnn>.jpg
      if not member.isfile() or len(parts) != 4 or '..' in parts:
        continue
      if limit and taken.get(parts[2], 0) >= limit:
        continue
      taken[parts[2]] = taken.get(parts[2], 0) + 1
      root = dest / parts[0]
      path = dest.joinpath(*parts)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(archive.extractfile(member).read())
  if root is None:
    raise FileNotFoundError(f'{tarball}: no <root>/train/<class>/<image> files')
  return root


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> dict:
  start = time.monotonic()
  root = extract(args.tarball, work_dir / 'tree', args.limit)
  extract_seconds = time.monotonic() - start
  load = os.getloadavg()
  start = time.monotonic()
  metadata = folder.convert(str(root), str(work_dir / 'records'),
                            validation_fraction=VALIDATION_FRACTION, workers=args.workers,
                            progress=not args.no_progress)
  seconds = time.monotonic() - start
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (already loaded by now)
  images = sum(metadata.counts.values())
  output_bytes = sum(os.path.getsize(path) for split in metadata.counts
                     for path in records.shard_files(str(work_dir / 'records'), split))
  return {
      'benchmark': 'convert folder mode, CIFAR-10 JPEG tree',
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpu_count': os.cpu_count(), 'usable_cores': writer.default_workers(),
                  'load_average_at_start': [round(v, 2) for v in load]},
      'versions': {'python': platform.python_version(), 'tensorflow': tf.__version__,
                   'pillow': PIL.__version__, 'numpy': np.__version__},
      'settings': {'tarball': str(args.tarball), 'limit_per_class': args.limit,
                   'workers': args.workers or writer.default_workers(),
                   'validation_fraction': VALIDATION_FRACTION, 'resize': 0,
                   'chunk_size': writer.CHUNK_SIZE, 'num_shards': metadata.num_shards},
      'results': {'images': images, 'counts': metadata.counts, 'seconds': round(seconds, 3),
                  'images_per_second': round(images / seconds, 1),
                  'extract_seconds': round(extract_seconds, 3), 'output_bytes': output_bytes},
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tarball', type=pathlib.Path, default=DEFAULT_TARBALL)
  parser.add_argument('--limit', type=int, default=0,
                      help='images per class (smoke mode); 0: all 5,000')
  parser.add_argument('--workers', type=int, help='default: the core count')
  parser.add_argument('--output', type=pathlib.Path, help='write the result as JSON here')
  parser.add_argument('--work-dir', type=pathlib.Path,
                      help='where the tree and the records go (default: a temporary '
                           'directory, deleted afterwards)')
  parser.add_argument('--no-progress', action='store_true')
  args = parser.parse_args(argv)
  if not args.tarball.is_file():  # one line, not a traceback from tarfile
    raise SystemExit(f'bench_convert: {args.tarball} is missing: this benchmark needs the real '
                     f'CIFAR-10 JPEG tarball (--tarball)')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  if args.work_dir:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result = run(args, args.work_dir)
  else:
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix='bench_convert_'))
    try:
      result = run(args, work_dir)
    finally:
      shutil.rmtree(work_dir, ignore_errors=True)
  text = json.dumps(result, indent=2)
  print(text)
  if args.output:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
