"""Tables of trained runs, shared by run_ablations.py and run_recipe_table.py.

A row is a name and the flags of `python -m alexnet_tf.train`; each (row, seed) trains into
RUNS_DIR/ROW-seedS and is scored by `python -m alexnet_tf.evaluate --checkpoint latest` (the
final weights, not the best on the validation split, so no row is selected on the data it is
scored on). A run that has its evaluation is not trained again, so a killed table resumes;
an unfinished run resumes from its checkpoint. The table (JSON with the machine, and
Markdown) is rewritten after every run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py: machine description)


class Row(NamedTuple):
  name: str
  flags: List[str]  # of alexnet_tf.train, after --data-dir/--model-dir/--seed
  claim: str  # what the row tests (the paper's claim, or the ingredient it adds)


EVALUATION = 'eval_final.json'


def run_one(runs_dir: str, data_dir: str, row: Row, seed: int,
            budget: Sequence[str] = ()) -> dict:
  """Trains and evaluates one (row, seed) unless done; returns its evaluation JSON."""
  model_dir = os.path.join(runs_dir, f'{row.name}-seed{seed}')
  result = os.path.join(model_dir, EVALUATION)
  if not os.path.isfile(result):
    train = [sys.executable, '-m', 'alexnet_tf.train', '--data-dir', data_dir,
             '--model-dir', model_dir, '--seed', str(seed), '--no-export', *row.flags, *budget]
    start = time.time()
    with open(os.path.join(runs_dir, f'{row.name}-seed{seed}.log'), 'a',
              encoding='utf-8') as log:
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


def finished(runs_dir: str, row: Row, seed: int) -> bool:
  return os.path.isfile(os.path.join(runs_dir, f'{row.name}-seed{seed}', EVALUATION))


def summarize(rows: Sequence[Row], done: Dict[str, Dict[int, dict]]) -> List[dict]:
  """One line per row: mean and per-seed centre and 10-crop top-1 (%); a row that has no
  finished run yet has no seeds and no figures."""
  table = []
  for row in rows:
    by_seed = done.get(row.name) or {}
    if not by_seed:
      table.append({'row': row.name, 'flags': row.flags, 'seeds': [], 'claim': row.claim})
      continue
    centre = [100 * (1 - r['centre_crop']['top1_error']) for r in by_seed.values()]
    ten = [100 * (1 - r['ten_crop']['top1_error']) for r in by_seed.values()]
    table.append({
        'row': row.name, 'flags': row.flags, 'seeds': sorted(by_seed), 'claim': row.claim,
        'centre_top1': statistics.mean(centre), 'centre_per_seed': centre,
        'ten_crop_top1': statistics.mean(ten), 'ten_crop_per_seed': ten,
        'minutes_per_run': _mean_minutes([r.get('minutes') for r in by_seed.values()])})
  return table


def markdown(table: List[dict], baseline: Optional[str], against: str, claim: str,
             minutes: bool = False) -> str:
  """`baseline`: the row every delta is against (None: the row above); `against`: the delta
  column's heading; `claim`: the last column's. `minutes` per run only where the runs had
  the machine to themselves."""
  base = next((t for t in table if t['row'] == baseline), None)
  time_head, time_rule = (' minutes |', '---|') if minutes else ('', '')
  lines = [f'| row | seeds | centre top-1 | {against} | 10-crop top-1 |{time_head} {claim} |',
           f'|---|---|---|---|---|{time_rule}---|']
  previous = None
  for t in table:
    if not t['seeds']:  # no delta across it: the row below differs from it, not from above it
      lines.append(f'| `{t["row"]}` | 0 | not run | | |' + (' |' if minutes else '') +
                   f' {t["claim"]} |')
      previous = t
      continue
    spread = '/'.join(f'{v:.1f}' for v in t['centre_per_seed'])
    reference = base if baseline is not None else previous
    delta = ('' if reference is None or t is reference or not reference['seeds'] else
             f'{t["centre_top1"] - reference["centre_top1"]:+.1f}')
    lines.append(f'| `{t["row"]}` | {len(t["seeds"])} | {t["centre_top1"]:.1f} ({spread}) | '
                 f'{delta} | {t["ten_crop_top1"]:.1f} |' +
                 (f' {_minutes(t["minutes_per_run"])} |' if minutes else '') +
                 f' {t["claim"]} |')
    previous = t
  return '\n'.join(lines) + '\n'


def _mean_minutes(minutes: List[Optional[float]]) -> Optional[float]:
  # A run that shared the machine records no minutes (its time is not the recipe's): the
  # row then has none.
  return None if None in minutes else statistics.mean(minutes)


def _minutes(value: Optional[float]) -> str:
  return 'not alone' if value is None else f'{value:.1f}'


def write_table(output: str, table: List[dict], budget: Sequence[str], text: str) -> None:
  with open(output, 'w', encoding='utf-8') as f:
    json.dump({'machine': common.machine_info(), 'date': time.strftime('%Y-%m-%d'),
               'budget': list(budget), 'table': table}, f, indent=2)
  with open(os.path.splitext(output)[0] + '.md', 'w', encoding='utf-8') as f:
    f.write(text)


def run_table(rows: Sequence[Row], seeds: Sequence[int], runs_dir: str, data_dir: str,
              output: str, budget: Sequence[str], report_only: bool, render) -> str:
  """Trains every (row, seed) seed-major (every row gets its first seed before any row gets
  its second), rewriting the table after each; `render(table)` is its Markdown."""
  os.makedirs(runs_dir, exist_ok=True)
  done: Dict[str, Dict[int, dict]] = {row.name: {} for row in rows}
  for seed in seeds:
    for row in rows:
      if report_only and not finished(runs_dir, row, seed):
        continue
      if not report_only:
        print(f'{row.name} seed {seed}', flush=True)
      done[row.name][seed] = run_one(runs_dir, data_dir, row, seed, budget)
      table = summarize(rows, done)
      write_table(output, table, budget, render(table))
  table = summarize(rows, done)
  write_table(output, table, budget, render(table))
  return render(table)


def add_arguments(parser: argparse.ArgumentParser, seeds: str, output: str) -> None:
  """The flags every table takes; `seeds` and `output` (a file name in RUNS_DIR) default."""
  parser.add_argument('--data-dir', required=True)
  parser.add_argument('--runs-dir', required=True)
  parser.add_argument('--rows', help='comma-separated rows, in the order they run '
                      '(default: all)')
  parser.add_argument('--seeds', default=seeds,
                      help='comma-separated seeds; each row runs each (default: %(default)s)')
  parser.add_argument('--output', help=f'JSON table (default: RUNS_DIR/{output}; .md beside)')
  parser.add_argument('--report-only', action='store_true',
                      help='train nothing: the table of the runs in RUNS_DIR that have finished')


def run_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  rows: Sequence[Row], budget: Sequence[str], output: str, render) -> str:
  """`run_table` of the `--rows` chosen from `rows` (exit 2 naming the choices if unknown)."""
  by_name = {row.name: row for row in rows}
  names = [r for r in (args.rows or ','.join(by_name)).split(',') if r]
  unknown = [r for r in names if r not in by_name]
  if unknown:
    parser.error(f'unknown rows {unknown}; choose from {sorted(by_name)}')
  return run_table([by_name[r] for r in names], [int(s) for s in args.seeds.split(',') if s],
                   args.runs_dir, args.data_dir,
                   args.output or os.path.join(args.runs_dir, output), budget,
                   args.report_only, render)
