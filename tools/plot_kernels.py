"""The paper's figure 3: the learned conv1 kernels, one panel per tower, and how colourful each is.

  python tools/plot_kernels.py --model-dir checkpoints/cifar10 --output conv1_kernels.png
  python tools/plot_kernels.py --model-dir run-seed1 run-seed2 --output k.png --json k.json

The paper saw the kernels of GPU 1 come out largely colour-agnostic and those of GPU 2 largely
colour-specific, the result of the towers' restricted connectivity. Each kernel's score is the
share of its energy off the grey axis (`alexnet_tf.activations.colourfulness`: 0 = grey,
1 = opponent colours, 2/3 for random weights); a permutation test asks whether the two towers
differ more than random halves of the same kernels would. With several runs (seeds), the PNG
shows the first run's kernels and every run's scores; the JSON has each run's numbers.
"""

import argparse
import sys

from alexnet_tf import cli_logging  # noqa: F401  first: quiets TensorFlow's C++ logs

import numpy as np

import figure_common
from alexnet_tf import activations


def kernel_tiles(kernels: np.ndarray) -> np.ndarray:
  """[k, k, 3, n] weights -> [n, k, k, 3] images in [0, 1], each scaled on its own (as the
  paper shows them: the sign and relative size of its weights, not its norm)."""
  tiles = np.moveaxis(np.asarray(kernels, np.float64), -1, 0)
  low = tiles.min(axis=(1, 2, 3), keepdims=True)
  high = tiles.max(axis=(1, 2, 3), keepdims=True)
  return (tiles - low) / np.maximum(high - low, 1e-12)


def mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
  """[n, k, k, 3] -> one [rows * (k + gap), columns * (k + gap), 3] picture on white."""
  n, k = len(tiles), tiles.shape[1]
  rows = -(-n // columns)
  picture = np.ones((rows * (k + gap) + gap, columns * (k + gap) + gap, 3))
  for i, tile in enumerate(tiles):
    r, c = divmod(i, columns)
    picture[gap + r * (k + gap):gap + r * (k + gap) + k,
            gap + c * (k + gap):gap + c * (k + gap) + k] = tile
  return picture


def score_runs(models, layer: str):
  """(runs, the first run's kernels): per run, each tower's per-kernel scores and, with two
  towers, the specialisation test."""
  runs, first = [], None
  for trained in models:
    kernels = activations.tower_kernels(trained, layer)
    first = kernels if first is None else first
    if kernels[0].shape[2] != 3:
      raise ValueError(f'{layer} reads {kernels[0].shape[2]} maps, not the RGB image: colour '
                       f'is a property of the first conv layer\'s kernels only')
    scores = [activations.colourfulness(k) for k in kernels]
    run = {'model': trained.saved_model or trained.checkpoint,
           'scores': [s.tolist() for s in scores]}
    if len(scores) == 2:
      run.update(activations.specialisation(scores))
    runs.append(run)
  return runs, first


def plot(kernels, runs: list, layer: str, output: str) -> None:
  """`kernels`: the first run's, one [k, k, 3, n] array per tower."""
  plt = figure_common.pyplot()
  towers = len(kernels)
  figure, axes = plt.subplots(towers + 1, 1, figsize=(9, 2.2 * towers + 3),
                              gridspec_kw={'height_ratios': [1.0] * towers + [1.2]})
  for t, (ax, k) in enumerate(zip(axes, kernels)):
    ax.imshow(mosaic(kernel_tiles(k), columns=min(16, k.shape[-1])), interpolation='nearest')
    ax.set_axis_off()
    ax.set_title(f'tower {t}: {k.shape[-1]} kernels {k.shape[0]}x{k.shape[1]}x{k.shape[2]}, '
                 f'colourfulness {np.mean(runs[0]["scores"][t]):.2f} '
                 f'+- {np.std(runs[0]["scores"][t]):.2f}', fontsize=10)
  ax = axes[-1]
  rng = np.random.default_rng(0)
  for r, run in enumerate(runs):
    for t, scores in enumerate(run['scores']):
      x = r + (t - (towers - 1) / 2) * 0.3 + rng.uniform(-0.06, 0.06, len(scores))
      ax.scatter(x, scores, s=12, color=f'C{t}', alpha=0.7, label=f'tower {t}' if r == 0 else None)
  ax.set_xticks(range(len(runs)))
  ax.set_xticklabels([f'run {r + 1}' + (f'\np = {run["p_value"]:.3g}' if 'p_value' in run else '')
                      for r, run in enumerate(runs)], fontsize=9)
  ax.set_ylabel('colourfulness')
  ax.axhline(2 / 3, color='grey', linestyle=':', linewidth=1, label='random weights')
  ax.set_xlim(-0.6, len(runs) - 0.4)
  ax.set_ylim(0, 1.02)
  ax.legend(loc='upper right', fontsize=9)
  ax.grid(alpha=0.3)
  figure.suptitle(f'{layer} kernels (first run) and per-kernel colourfulness (every run; '
                  f'p: permutation test of the towers\' gap)', fontsize=10)
  figure_common.save(figure, output, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  figure_common.add_model_args(parser, several=True)
  parser.add_argument('--layer', default='conv1', help='the conv layer (default: %(default)s)')
  parser.add_argument('--json', help='also write the scores and the test per run here')
  args = parser.parse_args(argv)

  def draw(args):
    models = figure_common.open_models(args)
    runs, kernels = score_runs(models, args.layer)
    plot(kernels, runs, args.layer, args.output)
    figure_common.write_json(args.json, {'layer': args.layer, 'runs': runs})
    for r, run in enumerate(runs):
      means = ', '.join(f'tower {t} {np.mean(s):.3f}' for t, s in enumerate(run['scores']))
      test = f'; gap {run["gap"]:.3f}, p = {run["p_value"]:.3g}' if 'gap' in run else ''
      print(f'run {r + 1}: colourfulness {means}{test}')

  return figure_common.run(draw, args)


if __name__ == '__main__':
  sys.exit(main())
