"""The confusion matrix of a trained model on a split, as a PNG (centre crop).

  python tools/plot_confusion.py --model-dir checkpoints/cifar10 --data-dir data/cifar10 \
      --output confusion.png --json confusion.json

Rows are the true classes, columns the predicted ones; each cell is the share of the row's
images (the diagonal is each class's top-1 accuracy) and the count. With more than 20 classes
only the 20 most confused ones are drawn; the JSON holds the whole matrix.
"""

import argparse
import sys

from alexnet_tf import cli_logging  # noqa: F401  first: quiets TensorFlow's C++ logs

import numpy as np

import figure_common
from alexnet_tf import activations, records

MAX_DRAWN = 20


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
  """[classes, classes] int counts: [true, predicted]."""
  return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(
      classes, classes)


def most_confused(matrix: np.ndarray, count: int) -> np.ndarray:
  """Indices of the `count` classes with the most errors, in class order."""
  errors = matrix.sum(axis=1) - np.diag(matrix)
  return np.sort(np.argsort(-errors, kind='stable')[:count])


def plot(matrix: np.ndarray, classes, title: str, output: str) -> None:
  plt = figure_common.pyplot()

  shown = most_confused(matrix, MAX_DRAWN) if len(classes) > MAX_DRAWN else np.arange(len(classes))
  counts = matrix[np.ix_(shown, shown)]
  shares = counts / np.maximum(matrix[shown].sum(axis=1, keepdims=True), 1)
  size = 1.0 + 0.6 * len(shown)
  figure, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(100 * shares, cmap='Blues', vmin=0, vmax=100)
  for (r, c), share in np.ndenumerate(shares):
    ax.text(c, r, f'{100 * share:.0f}\n({counts[r, c]})', ha='center', va='center', fontsize=6.5,
            color='white' if share > 0.5 else 'black')
  names = [classes[i] for i in shown]
  ax.set_xticks(range(len(shown)), names, rotation=45, ha='right', fontsize=8)
  ax.set_yticks(range(len(shown)), names, fontsize=8)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title, fontsize=9)
  figure.colorbar(image, ax=ax, fraction=0.046, label='share of the true class (%)')
  figure_common.save(figure, output)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  figure_common.add_model_args(parser)
  parser.add_argument('--data-dir', required=True, help='the converted dataset')
  parser.add_argument('--split', default=records.VALIDATION, choices=records.SPLITS)
  parser.add_argument('--json', help='also write the matrix here')
  args = parser.parse_args(argv)

  def draw(args):
    (trained,) = figure_common.open_models(args)
    logits = activations.activations(trained, args.data_dir, args.split,
                                     trained.config.model.logits_name, progress=True)
    predictions = np.argmax(logits.values, axis=1)
    matrix = confusion_matrix(logits.labels, predictions, len(trained.classes))
    top1 = float(np.trace(matrix) / matrix.sum())
    plot(matrix, trained.classes, f'{args.split} split, centre crop: top-1 {100 * top1:.1f}% '
         f'of {matrix.sum()} images', args.output)
    off = matrix - np.diag(np.diag(matrix))
    worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:3], off.shape))[0]
    print(f'top-1 {100 * top1:.2f}%; most confused: ' + ', '.join(
        f'{trained.classes[t]} -> {trained.classes[p]} ({off[t, p]})' for t, p in worst))
    figure_common.write_json(args.json, {'split': args.split, 'classes': list(trained.classes),
                                         'top1': top1, 'matrix': matrix.tolist()})

  return figure_common.run(draw, args)


if __name__ == '__main__':
  sys.exit(main())
