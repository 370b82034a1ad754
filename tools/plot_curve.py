"""Draws a run's learning curve (validation top-1 and top-5 against wall-clock minutes) as PNG.

  pip install -e '.[plot]'
  python tools/plot_curve.py checkpoints/cifar10 --output cifar10_curve.png --mark 0.85=target

Reads MODEL_DIR/history.jsonl (one line per evaluation, written by the training loop). Minute 0
is --start-time (epoch seconds, e.g. `date +%s` taken when the run was started), or else one
evaluation interval before the first evaluation.
"""

import argparse
import json
import os
import sys
from typing import List, Sequence, Tuple

SERIES = (('top1_accuracy', 'validation top-1'), ('top5_accuracy', 'validation top-5'))


def read_history(model_dir: str) -> List[dict]:
  path = os.path.join(model_dir, 'history.jsonl')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: not a training run directory')
  with open(path, encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    raise ValueError(f'{path} has no evaluations yet')
  return rows


def parse_mark(text: str) -> Tuple[float, str]:
  """'0.85=target' -> (0.85, 'target'): a horizontal reference line."""
  value, _, label = text.partition('=')
  try:
    return float(value), label or value
  except ValueError:
    raise argparse.ArgumentTypeError(f'--mark {text!r}: expected VALUE=LABEL, e.g. 0.85=target')


def plot(rows: Sequence[dict], start_time: float, title: str, output: str,
         marks: Sequence[Tuple[float, str]] = ()) -> None:
  """rows: history records; start_time: epoch seconds of minute 0; marks: (y, label) lines."""
  import matplotlib  # pylint: disable=import-outside-toplevel  (an extra: '.[plot]')
  matplotlib.use('Agg')  # files only, no display
  from matplotlib import pyplot, ticker  # pylint: disable=import-outside-toplevel

  minutes = [(r['time'] - start_time) / 60.0 for r in rows]
  figure, axes = pyplot.subplots(figsize=(9, 5.2), dpi=100)
  for key, label in SERIES:
    axes.plot(minutes, [r[key] for r in rows], marker='o', markersize=3, label=label)
  for value, label in marks:
    axes.axhline(value, color='grey', linewidth=0.8, linestyle='--')
    axes.annotate(label, (1.0, value), xycoords=('axes fraction', 'data'), ha='right',
                  va='bottom', color='dimgrey', fontsize=9)
  axes.set(xlabel='wall-clock minutes', ylabel='accuracy', ylim=(0, 1), xlim=(0, None),
           title=title)
  axes.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
  axes.grid(alpha=0.3)
  axes.legend(loc='lower right')
  figure.tight_layout()
  figure.savefig(output)
  pyplot.close(figure)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('model_dir')
  parser.add_argument('--output', required=True, help='PNG file to write')
  parser.add_argument('--start-time', type=float,
                      help='epoch seconds of minute 0 (default: the first evaluation minus '
                           'the time of one evaluation interval)')
  parser.add_argument('--title', default='AlexNet on CIFAR-10: validation accuracy')
  parser.add_argument('--mark', type=parse_mark, action='append', default=[],
                      metavar='VALUE=LABEL', help='a horizontal reference line (repeatable)')
  args = parser.parse_args(argv)
  try:
    rows = read_history(args.model_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  start = args.start_time
  if start is None:
    gap = rows[1]['time'] - rows[0]['time'] if len(rows) > 1 else 60.0
    start = rows[0]['time'] - gap
  try:
    plot(rows, start, args.title, args.output, args.mark)
  except ImportError:
    print("error: plotting needs matplotlib: pip install -e '.[plot]'", file=sys.stderr)
    return 1
  print(args.output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
