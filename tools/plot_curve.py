"""Draws a run's learning curve (validation top-1 and top-5 against wall-clock minutes) as PNG.

  python tools/plot_curve.py checkpoints/cifar10 --output docs/cifar10_curve.png

Reads MODEL_DIR/history.jsonl (one line per evaluation, written by the training loop); minute 0
is --start-time (epoch seconds, e.g. `date +%s` taken when the run was started) or else one
evaluation interval before the first evaluation. Uses Pillow only, so it needs nothing beyond
the project's dependencies.
"""

import argparse
import json
import os
import sys

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 40, 60
SERIES = (('top1_accuracy', 'validation top-1', (31, 119, 180)),
          ('top5_accuracy', 'validation top-5', (255, 127, 14)))


def read_history(model_dir):
  path = os.path.join(model_dir, 'history.jsonl')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: not a training run directory')
  with open(path, encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    raise ValueError(f'{path} has no evaluations yet')
  return rows


def plot(rows, start_time, title, output, marks=()):
  """rows: history records; start_time: epoch seconds of minute 0; marks: (y, label) lines."""
  minutes = [(r['time'] - start_time) / 60.0 for r in rows]
  x_max = max(minutes) * 1.05 or 1.0
  image = Image.new('RGB', (WIDTH, HEIGHT), 'white')
  draw = ImageDraw.Draw(image)

  def to_px(x, y):
    return (LEFT + x / x_max * (WIDTH - LEFT - RIGHT),
            HEIGHT - BOTTOM - y * (HEIGHT - TOP - BOTTOM))

  for i in range(11):  # horizontal grid every 10%
    _, y = to_px(0, i / 10)
    draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=(225, 225, 225))
    draw.text((LEFT - 40, y - 6), f'{i * 10}%', fill='black')
  step = max(1, round(x_max / 10))
  for m in range(0, int(x_max) + 1, step):
    x, _ = to_px(m, 0)
    draw.line([(x, HEIGHT - BOTTOM), (x, HEIGHT - BOTTOM + 5)], fill='black')
    draw.text((x - 8, HEIGHT - BOTTOM + 8), str(m), fill='black')
  draw.text((WIDTH // 2 - 60, HEIGHT - 25), 'wall-clock minutes', fill='black')
  draw.rectangle([LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM], outline='black')
  for i, (y_value, label) in enumerate(marks):
    _, y = to_px(0, y_value)
    draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=(150, 150, 150), width=1)
    draw.text((WIDTH - RIGHT - 150, y + (3 if i % 2 == 0 else -14)), label, fill=(100, 100, 100))
  if x_max > 30:  # the 30-minute budget of the recipe
    x, _ = to_px(30, 0)
    draw.line([(x, TOP), (x, HEIGHT - BOTTOM)], fill=(150, 150, 150), width=1)
    draw.text((x + 4, HEIGHT - BOTTOM - 16), '30 min', fill=(100, 100, 100))
  for key, label, color in SERIES:
    points = [to_px(m, r[key]) for m, r in zip(minutes, rows)]
    draw.line(points, fill=color, width=2)
    for x, y in points:
      draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
  for i, (_, label, color) in enumerate(SERIES):
    draw.line([(LEFT + 15, TOP + 15 + 16 * i), (LEFT + 40, TOP + 15 + 16 * i)], fill=color,
              width=2)
    draw.text((LEFT + 45, TOP + 9 + 16 * i), label, fill='black')
  draw.text((LEFT, 12), title, fill='black')
  image.save(output)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('model_dir')
  parser.add_argument('--output', required=True, help='PNG file to write')
  parser.add_argument('--start-time', type=float,
                      help='epoch seconds of minute 0 (default: the first evaluation minus '
                           'the time of one evaluation interval)')
  parser.add_argument('--title', default='AlexNet on CIFAR-10: validation accuracy')
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
  plot(rows, start, args.title, args.output,
       marks=((0.85, '85%: target at 30 min'), (0.88, '88%: final target')))
  print(args.output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
