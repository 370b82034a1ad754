"""The paper's claims as a table: the paper's recipe and each ablation, one budget and seeds.

    python benchmarks/run_ablations.py --data-dir data/cifar10 --runs-dir ablations \
        --epochs 4 --decay-epochs 2.7,3.5 --seeds 1,2

Each row is `python -m alexnet_tf.train --dataset cifar10_paper --ablation NAME` with the
budget's flags, scored on its final weights (trained_table.py: resumable, rewritten after
every run).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trained_table  # noqa: E402

from alexnet_tf import ablations  # noqa: E402

BASELINE = 'recipe'


def rows(dataset: str):
  """The recipe, then one row per ablation of alexnet_tf/ablations.py."""
  return [trained_table.Row(BASELINE, ['--dataset', dataset], 'the recipe, all ingredients')] + [
      trained_table.Row(name, ['--dataset', dataset, '--ablation', name], ablation.claim)
      for name, ablation in ablations.ABLATIONS.items()]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--dataset', default='cifar10_paper',
                 help='the recipe whose ingredients are ablated (default: the paper\'s)')
  trained_table.add_arguments(p, seeds='1,2', output='ablations.json')
  p.add_argument('--epochs', type=float, default=4.0)
  p.add_argument('--decay-epochs', default='2.7,3.5')
  args = p.parse_args(argv)
  budget = ['--epochs', str(args.epochs), '--decay-epochs', args.decay_epochs]
  print(trained_table.run_from_args(
      p, args, rows(args.dataset), budget, 'ablations.json',
      lambda table: trained_table.markdown(table, BASELINE, 'vs recipe', 'paper')))
  return 0

if __name__ == '__main__':
  sys.exit(main())
