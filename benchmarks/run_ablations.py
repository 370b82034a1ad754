"""The paper's claims as a table: trains the recipe and each ablation with one budget and seeds.

    python benchmarks/run_ablations.py --data-dir data/cifar10 --runs-dir ablations \
        --epochs 4 --decay-epochs 2.7,3.5 --seeds 1,2

Each run is `python -m alexnet_tf.train --dataset cifar10_paper --ablation NAME ...` followed by
`python -m alexnet_tf.evaluate --checkpoint latest` (the final weights, not the best on the
validation split, so no row is selected on the data it is scored on). A run that already has
its evaluation is not trained again, so a killed table resumes; an unfinished run resumes from
its checkpoint. The table (JSON with the machine, and Markdown) is rewritten after every run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py: machine description)

from alexnet_tf import ablations  # noqa: E402

BASELINE = 'recipe'


def run_one(args, row: str, seed: int) -> dict:
  """Trains and evaluates one (row, seed); returns the evaluation JSON."""
  model_dir = os.path.join(args.runs_dir, f'{row}-seed{seed}')
  result = os.path.join(model_dir, 'eval_final.json')
  if not os.path.isfile(result):
    train = [sys.executable, '-m', 'alexnet_tf.train', '--dataset', args.dataset,
             '--data-dir', args.data_dir, '--model-dir', model_dir, '--seed', str(seed),
             '--epochs', str(args.epochs), '--decay-epochs', args.decay_epochs, '--no-export']
    if row != BASELINE:
      train += ['--ablation', row]
    log_path = os.path.join(args.runs_dir, f'{row}-seed{seed}.log')
    start = time.time()
    with open(log_path, 'a', encoding='utf-8') as log:
      subprocess.run(train, stdout=log, stderr=subprocess.STDOUT, check=True)
      subprocess.run([sys.executable, '-m', 'alexnet_tf.evaluate', '--model-dir', model_dir,
                      '--checkpoint', 'latest', '--output', result],
                     stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(result, encoding='utf-8') as f:
      evaluation = json.load(f)
    evaluation['minutes'] = (time.time() - start) / 60
    with open(result, 'w', encoding='utf-8') as f:
      json.dump(evaluation, f, indent=2)
  with open(result, encoding='utf-8') as f:
    return json.load(f)


def summarize(rows: dict) -> list:
  """One line per row: mean and spread of centre and 10-crop top-1 over the seeds done."""
  table = []
  for row, by_seed in rows.items():
    if not by_seed:
      continue
    centre = [100 * (1 - r['centre_crop']['top1_error']) for r in by_seed.values()]
    ten = [100 * (1 - r['ten_crop']['top1_error']) for r in by_seed.values()]
    table.append({
        'row': row, 'seeds': sorted(by_seed),
        'claim': ablations.ABLATIONS[row].claim if row in ablations.ABLATIONS else
                 'the recipe, all ingredients',
        'centre_top1': statistics.mean(centre), 'centre_per_seed': centre,
        'ten_crop_top1': statistics.mean(ten), 'ten_crop_per_seed': ten,
        'minutes_per_run': statistics.mean(r.get('minutes', float('nan'))
                                           for r in by_seed.values())})
  return table


def markdown(table: list) -> str:
  base = next((t for t in table if t['row'] == BASELINE), None)
  lines = ['| row | seeds | centre top-1 | vs recipe | 10-crop top-1 | paper |',
           '|---|---|---|---|---|---|']
  for t in table:
    spread = '/'.join(f'{v:.1f}' for v in t['centre_per_seed'])
    delta = '' if base is None or t is base else f'{t["centre_top1"] - base["centre_top1"]:+.1f}'
    lines.append(f'| `{t["row"]}` | {len(t["seeds"])} | {t["centre_top1"]:.1f} ({spread}) | '
                 f'{delta} | {t["ten_crop_top1"]:.1f} | {t["claim"]} |')
  return '\n'.join(lines) + '\n'


def write_table(args, output: str, done: dict) -> None:
  table = summarize(done)
  with open(output, 'w', encoding='utf-8') as f:
    json.dump({'machine': common.machine_info(), 'date': time.strftime('%Y-%m-%d'),
               'budget': {'epochs': args.epochs, 'decay_epochs': args.decay_epochs},
               'table': table}, f, indent=2)
  with open(os.path.splitext(output)[0] + '.md', 'w', encoding='utf-8') as f:
    f.write(markdown(table))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--dataset', default='cifar10_paper',
                 help='the recipe whose ingredients are ablated (default: the paper\'s)')
  p.add_argument('--data-dir', required=True)
  p.add_argument('--runs-dir', required=True)
  p.add_argument('--rows', default=','.join([BASELINE] + list(ablations.ABLATIONS)),
                 help='comma-separated rows, in the order they run')
  p.add_argument('--seeds', default='1,2', help='comma-separated seeds; each row runs each')
  p.add_argument('--epochs', type=float, default=4.0)
  p.add_argument('--decay-epochs', default='2.7,3.5')
  p.add_argument('--output', help='JSON table (default: RUNS_DIR/ablations.json; .md beside)')
  p.add_argument('--report-only', action='store_true',
                 help='train nothing: the table of the runs in RUNS_DIR that have finished')
  args = p.parse_args(argv)
  rows = [r for r in args.rows.split(',') if r]
  unknown = [r for r in rows if r != BASELINE and r not in ablations.ABLATIONS]
  if unknown:
    p.error(f'unknown rows {unknown}; choose from {[BASELINE] + sorted(ablations.ABLATIONS)}')
  seeds = [int(s) for s in args.seeds.split(',') if s]
  os.makedirs(args.runs_dir, exist_ok=True)
  output = args.output or os.path.join(args.runs_dir, 'ablations.json')
  done = {row: {} for row in rows}
  # Seed-major: every row gets its first seed before any row gets its second.
  for seed in seeds:
    for row in rows:
      if args.report_only:
        if os.path.isfile(os.path.join(args.runs_dir, f'{row}-seed{seed}', 'eval_final.json')):
          done[row][seed] = run_one(args, row, seed)
        continue
      print(f'{row} seed {seed}', flush=True)
      done[row][seed] = run_one(args, row, seed)
      write_table(args, output, done)
  write_table(args, output, done)
  print(markdown(summarize(done)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
