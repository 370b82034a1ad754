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
    ('epochs_18', ['--epochs', '18'], '+ 3 epochs, 18 in all'),
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
  p.add_argument('--data-dir', required=True)
  p.add_argument('--runs-dir', required=True)
  p.add_argument('--rows', help='comma-separated rows, in the order they run (default: all)')
  p.add_argument('--seeds', default='1', help='comma-separated seeds; each row runs each')
  p.add_argument('--epochs', type=float, help='another budget than the recipes\' (testing)')
  p.add_argument('--output', help='JSON table (default: RUNS_DIR/recipe_table.json)')
  p.add_argument('--report-only', action='store_true',
                 help='train nothing: the table of the runs in RUNS_DIR that have finished')
  args = p.parse_args(argv)
  table_rows = {row.name: row for row in rows()}
  names = [r for r in (args.rows or ','.join(table_rows)).split(',') if r]
  unknown = [r for r in names if r not in table_rows]
  if unknown:
    p.error(f'unknown rows {unknown}; choose from {sorted(table_rows)}')
  budget = [] if args.epochs is None else ['--epochs', str(args.epochs)]
  print(trained_table.run_table(
      [table_rows[r] for r in names], [int(s) for s in args.seeds.split(',') if s],
      args.runs_dir, args.data_dir,
      args.output or os.path.join(args.runs_dir, 'recipe_table.json'), budget,
      args.report_only,
      lambda table: trained_table.markdown(table, None, 'vs row above', 'ingredient',
                                           minutes=True)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
