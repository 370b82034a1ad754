"""The paper's figure 4: validation images and the training images nearest to them in fc7.

  python tools/plot_retrieval.py --model-dir checkpoints/cifar10 --data-dir data/cifar10 \
      --output retrieval.png --json retrieval.json

The first column holds query images from the validation split; each row then shows the
training images whose fc7 activations (the last hidden layer, 4096-d in the paper) are nearest
in Euclidean distance, with their class (green: the query's own). The paper's point is that
these neighbours are of the query's class while far from it pixel by pixel; `--json` records
how often the k nearest share the query's class, in fc7 and, for contrast, in pixel space,
over `--score-queries` validation images.
"""

import argparse
import sys

from alexnet_tf import cli_logging  # noqa: F401  first: quiets TensorFlow's C++ logs

import numpy as np

import figure_common
from alexnet_tf import activations, records


def agreement(query_labels: np.ndarray, neighbour_labels: np.ndarray) -> float:
  """The share of neighbours [Q, k] whose label is their query's [Q]."""
  return float(np.mean(neighbour_labels == query_labels[:, None]))


def chance(query_labels: np.ndarray, pool_labels: np.ndarray) -> float:
  """The same share for neighbours drawn at random from the pool."""
  classes = max(query_labels.max(), pool_labels.max()) + 1
  return float(np.bincount(query_labels, minlength=classes) @
               np.bincount(pool_labels, minlength=classes) /
               (len(query_labels) * len(pool_labels)))


def plot(queries, pool, rows, neighbours, classes, layer, output) -> None:
  plt = figure_common.pyplot()

  k = neighbours.shape[1]
  figure, axes = plt.subplots(len(rows), k + 1, figsize=(1.25 * (k + 1), 1.45 * len(rows)),
                              squeeze=False)
  for r, q in enumerate(rows):
    cells = [(queries.images[q], f'query: {classes[queries.labels[q]]}', 'black')]
    cells += [(pool.images[n], classes[pool.labels[n]],
               'green' if pool.labels[n] == queries.labels[q] else 'red')
              for n in neighbours[r]]
    for ax, (image, title, colour) in zip(axes[r], cells):
      ax.imshow(image, interpolation='nearest')
      ax.set_title(title, fontsize=7, color=colour)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[r][0].spines[:].set_linewidth(2)
  figure.suptitle(f'validation queries (left) and their {k} nearest training images in {layer}',
                  fontsize=9)
  figure_common.save(figure, output)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  figure_common.add_model_args(parser)
  parser.add_argument('--data-dir', required=True, help='the converted dataset')
  parser.add_argument('--layer', default='fc7', help='the layer compared (default: %(default)s)')
  parser.add_argument('--queries', type=int, default=6, help='query rows in the figure')
  parser.add_argument('--neighbours', type=int, default=7, help='neighbours per row')
  parser.add_argument('--train-limit', type=int, help='search only the first N training images')
  parser.add_argument('--score-queries', type=int, default=1000,
                      help='validation images over which the class agreement is measured')
  parser.add_argument('--seed', type=int, default=0, help='which validation images are queries')
  parser.add_argument('--json', help='also write the agreement figures and the rows here')
  args = parser.parse_args(argv)

  def draw(args):
    (trained,) = figure_common.open_models(args)
    pool = activations.activations(trained, args.data_dir, records.TRAIN, args.layer,
                                   limit=args.train_limit, progress=True)
    queries = activations.activations(trained, args.data_dir, records.VALIDATION, args.layer,
                                      limit=max(args.score_queries, args.queries), progress=True)
    k = args.neighbours
    found, _ = activations.nearest(queries.values, pool.values, k)
    by_pixels, _ = activations.nearest(queries.images, pool.images, k)
    rows = np.random.default_rng(args.seed).choice(len(queries.labels), args.queries,
                                                   replace=False)
    plot(queries, pool, rows, found[rows], trained.classes, args.layer, args.output)
    result = {'layer': args.layer, 'neighbours': k, 'queries_scored': len(queries.labels),
              'training_images_searched': len(pool.labels),
              'same_class_share': {args.layer: agreement(queries.labels, pool.labels[found]),
                                   'pixels': agreement(queries.labels, pool.labels[by_pixels])},
              'chance': chance(queries.labels, pool.labels)}
    print(f'{k} nearest training images of the query\'s class: '
          f'{100 * result["same_class_share"][args.layer]:.1f}% in {args.layer}, '
          f'{100 * result["same_class_share"]["pixels"]:.1f}% in pixel space '
          f'({len(queries.labels)} validation queries, {len(pool.labels)} training images)')
    figure_common.write_json(args.json, result)

  return figure_common.run(draw, args)


if __name__ == '__main__':
  sys.exit(main())
