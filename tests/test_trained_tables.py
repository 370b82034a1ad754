"""The tables of trained runs (benchmarks/run_ablations.py, run_recipe_table.py): their rows
are the product's configs, and a table trains each run once, resumes, and reports."""

import json
import pathlib
import sys

from alexnet_tf import recipes, train

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'
sys.path.insert(0, str(BENCHMARKS))

# pylint: disable=wrong-import-position,import-error
import run_ablations  # noqa: E402
import run_recipe_table  # noqa: E402
import trained_table  # noqa: E402


def _config(flags):
  return train.config_from_args(train.build_parser().parse_args(['--data-dir', 'x', *flags]))[0]


def test_the_ingredient_rows_go_from_the_paper_recipe_to_the_default():
  rows = {row.name: row for row in run_recipe_table.rows()}
  names = [name for name, _, _ in run_recipe_table.INGREDIENTS]
  assert _config(rows[names[0]].flags) == recipes.get_config('cifar10_paper')
  assert _config(rows[names[-1]].flags) == recipes.get_config('cifar10')
  configs = [_config(rows[name].flags) for name in names]
  assert len(set(configs)) == len(configs)  # every row adds something
  # The last row widens the net the rows above trained with the default's recipe.
  default, above = configs[-1], configs[-2]
  assert above.train == default.train and above.data == default.data
  assert above.model == recipes.get_config('cifar10_paper').model != default.model
  batch_norm = _config(rows['batch_norm'].flags)
  assert batch_norm.model.normalization == 'batch'
  assert batch_norm.train == recipes.get_config('cifar10').train


def test_every_ablation_row_applies_its_ablation_to_the_paper_recipe():
  rows = run_ablations.rows('cifar10_paper')
  assert _config(rows[0].flags) == recipes.get_config('cifar10_paper')
  assert {row.name for row in rows[1:]} == set(run_ablations.ablations.ABLATIONS)
  for row in rows[1:]:
    assert _config(row.flags) == run_ablations.ablations.apply(
        row.name, recipes.get_config('cifar10_paper'))


def test_a_table_trains_each_run_once_and_reports_it(cifar10_subset_records, tmp_path):
  row = trained_table.Row('tiny', ['--dataset', 'cifar10', '--batch-size', '8'], 'a smoke row')
  runs, output = tmp_path / 'runs', tmp_path / 'table.json'
  args = ([row], [3], str(runs), str(cifar10_subset_records), str(output), ['--max-steps', '2'])
  render = lambda table: trained_table.markdown(table, 'tiny', 'vs tiny', 'claim', minutes=True)
  text = trained_table.run_table(*args, False, render)
  evaluation = runs / 'tiny-seed3' / trained_table.EVALUATION
  assert evaluation.is_file() and '| `tiny` | 1 |' in text
  first = evaluation.stat().st_mtime_ns
  assert trained_table.run_table(*args, True, render) == text  # report-only: nothing trains
  trained_table.run_table(*args, False, render)  # resumes: the run is done
  assert evaluation.stat().st_mtime_ns == first
  table = json.loads(output.read_text())
  assert table['budget'] == ['--max-steps', '2'] and table['machine']['cores'] >= 1
  [line] = table['table']
  assert line['seeds'] == [3] and 0 <= line['centre_top1'] <= 100
  assert (output.with_suffix('.md')).read_text() == text


def test_a_row_not_run_yet_is_shown_and_no_delta_spans_it():
  rows = [trained_table.Row(name, [], name) for name in ('a', 'b', 'c', 'd')]
  result = lambda top1, **minutes: {'centre_crop': {'top1_error': 1 - top1},
                                    'ten_crop': {'top1_error': 1 - top1}, **minutes}
  table = trained_table.summarize(rows, {'a': {1: result(0.5, minutes=2.0)},
                                         'c': {1: result(0.7, minutes=3.0)},
                                         'd': {1: result(0.8)}})
  assert [t['row'] for t in table] == ['a', 'b', 'c', 'd'] and table[1]['seeds'] == []
  lines = trained_table.markdown(table, None, 'vs row above', 'claim',
                                 minutes=True).splitlines()[2:]
  cells = [[cell.strip() for cell in line.split('|')] for line in lines]
  assert cells[1][1:4] == ['`b`', '0', 'not run']
  assert cells[2][4] == '' and cells[2][6] == '3.0'  # c against the missing b: no delta
  assert cells[3][4] == '+10.0'  # d against c
  assert cells[3][6] == 'not alone'  # a run without minutes shared the machine
