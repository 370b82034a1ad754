"""Time and peak memory of a SavedModel served a decompression bomb: a 1.2 MB PNG of 20000x20000.

  python benchmarks/bench_serving_bomb.py --saved-model checkpoints/cifar10/export --json bomb.json

The bomb is written by a child process (Pillow needs 1.2 GB to make it), so the figures are
the serving process's own: its peak resident memory (ru_maxrss) after one ordinary request and
after the bomb, and how long the bomb's request took to fail (or to be served).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import alexnet_tf  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

from alexnet_tf import export  # noqa: E402  pylint: disable=wrong-import-position

SIDE = 20000
_WRITE_BOMB = ('import sys; from PIL import Image; '
               f'Image.new("RGB", ({SIDE}, {SIDE}), (120, 30, 200)).save(sys.argv[1])')


def peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--saved-model', required=True,
                      help='an export base (numbered versions inside) or one SavedModel')
  parser.add_argument('--json', help='write the results here')
  args = parser.parse_args(argv)
  path = args.saved_model
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')):
    path = export.latest_export(path)
  with tempfile.TemporaryDirectory() as tmp:
    bomb_path = os.path.join(tmp, 'bomb.png')
    subprocess.run([sys.executable, '-c', _WRITE_BOMB, bomb_path], check=True)
    with open(bomb_path, 'rb') as f:
      bomb = f.read()
  serve = tf.saved_model.load(path, tags=['serve']).signatures[export.SERVING_SIGNATURE]
  ordinary = tf.io.encode_jpeg(tf.zeros([32, 32, 3], tf.uint8)).numpy()
  serve(**{export.IMAGE_BYTES: tf.constant([ordinary])})
  before = peak_mib()
  start = time.perf_counter()
  try:
    serve(**{export.IMAGE_BYTES: tf.constant([bomb])})
    outcome = 'served'
  except tf.errors.InvalidArgumentError as e:
    outcome = 'refused: ' + next((l for l in e.message.splitlines() if 'assertion failed' in l),
                                 e.message.splitlines()[0])[:160]
  seconds = time.perf_counter() - start
  result = {
      'saved_model': path, 'bomb': f'{SIDE}x{SIDE} PNG, {len(bomb)} bytes', 'outcome': outcome,
      'seconds': seconds, 'peak_rss_mib_before': before, 'peak_rss_mib_after': peak_mib(),
      'machine': {'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(),
                  'tensorflow': tf.__version__},
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
  print(f'{result["bomb"]}: {outcome}\n{seconds * 1000:.0f} ms; peak RSS '
        f'{before:.0f} MiB before, {result["peak_rss_mib_after"]:.0f} MiB after')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
