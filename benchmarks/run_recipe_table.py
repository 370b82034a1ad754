"""Where the default CIFAR-10 recipe's points come from: one row per ingredient, each row the
one above plus that ingredient, the same seed and budget, then batch norm beside it.

    python benchmarks/run_recipe_table.py --data-dir data/cifar10 --runs-dir recipe_table

The first row is the paper's recipe (`--dataset cifar10_paper`), the last ingredient row is
the default (`--dataset cifar10`; a test checks that each row is the one above plus one
change); `batch_norm` is the default
with batch normalisation in place of LRN, the Keras ports' choice and not the paper's. Runs
are scored on their final weights (trained_table.py: resumable, rewritten after every run).
Each run wants the machine to itself: the minutes column is the recipe's time.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trained_table  # noqa: E402

PAPER = ['--dataset', 'cifar10_paper']
# (name, the flags it adds to the row above, what it is)
INGREDIENTS = (
    ('paper', PAPER, "the paper's recipe: 0.01, /10 after epochs 10 and 13"),
    ('linear_schedule', ['--schedule', 'linear', '--warmup-epochs', '1', '--learning-rate',
                         '0.02'], '+ 1 epoch of warm-up to 0.02, then linear decay to 0'),
    ('nesterov', ['--nesterov'], '+ Nesterov momentum'),
    ('label_smoothing', ['--label-smoothing', '0.1'], '+ label smoothing 0.1'),
    ('epochs_13', ['--epochs', '13'], '- 2 epochs, 13 in all: the budget of 30 minutes'),
    # A net the paper recipe does not have: the default itself, not flags on the row above.
    ('wide_fc', ['--dataset', 'cifar10'], '+ fc6 and fc7 of 1024 units: the default'),
)
BESIDE = (
    ('batch_norm', ['--dataset', 'cifar10', '--normalization', 'batch'],
     'the default with batch norm instead of LRN (not the paper\'s)'),
)


def rows():
  """The cumulative ingredient rows, then the rows beside them."""
  table, flags = [], []
  for name, added, claim in INGREDIENTS:
    flags = added if added[0] == '--dataset' else flags + added
    table.append(trained_table.Row(name, flags, claim))
  return table + [trained_table.Row(name, flags, claim) for name, flags, claim in BESIDE]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  trained_table.add_arguments(p, seeds='1', output='recipe_table.json')
  p.add_argument('--epochs', type=float, help='another budget than the recipes\' (testing)')
  args = p.parse_args(argv)
  budget = [] if args.epochs is None else ['--epochs', str(args.epochs)]
  print(trained_table.run_from_args(
      p, args, rows(), budget, 'recipe_table.json',
      lambda table: trained_table.markdown(table, None, 'vs row above', 'ingredient',
                                           minutes=True)))
  return 0

if __name__ == '__main__':
  sys.exit(main())
