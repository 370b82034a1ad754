"""The paper's evidence: the ablations, the kernel and retrieval statistics, the figure tools.

Units check the statistics against direct NumPy computations; the tools run on a 6-step run
of the real-image fixture, from its checkpoint and from its export.
"""

import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_tf import ablations, activations, export, records, train
from alexnet_tf import config as cfg
from alexnet_tf import recipes

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tools'))
import plot_confusion  # noqa: E402  pylint: disable=wrong-import-position
import plot_kernels  # noqa: E402  pylint: disable=wrong-import-position
import plot_retrieval  # noqa: E402  pylint: disable=wrong-import-position

CIFAR10 = recipes.get_config('cifar10')


# --- ablations --------------------------------------------------------------------------------

def _differences(a, b, prefix=''):
  """Dotted paths of the fields where two (nested) config dicts differ."""
  if isinstance(a, dict):
    return sorted(p for k in a for p in _differences(a[k], b[k], f'{prefix}{k}.'))
  if isinstance(a, (list, tuple)) and len(a) == len(b) and a and isinstance(a[0], dict):
    return sorted(p for i, (x, y) in enumerate(zip(a, b))
                  for p in _differences(x, y, f'{prefix}{i}.'))
  return [prefix[:-1]] if a != b else []


@pytest.mark.parametrize('name, changed', [
    ('no_lrn', {f'model.conv_layers.{i}.lrn' for i in (0, 1)}),
    ('nonoverlapping_pool', {'model.pool_size'}),
    ('no_dropout', {'model.dropout_rate'}),
    ('no_pca_lighting', {'data.pca_lighting_std'}),
    ('paper_init', {f'model.conv_layers.{i}.init_stddev' for i in range(5)}),
])
def test_each_ablation_changes_only_its_ingredient(name, changed):
  ablated = ablations.apply(name, CIFAR10)
  assert set(_differences(cfg.to_dict(CIFAR10), cfg.to_dict(ablated))) == changed


def test_one_tower_has_half_the_kernels_but_the_last_conv_and_keeps_he_scaling():
  one = ablations.apply('one_tower', CIFAR10).model
  two = CIFAR10.model
  assert one.num_towers == 1 and len(one.tower_devices) == 1
  assert [l.filters for l in one.conv_layers] == [
      l.filters // 2 for l in two.conv_layers[:-1]] + [two.conv_layers[-1].filters]
  # He scaling follows each layer's real fan-in: conv3 reads both towers' 96 maps in the
  # two-tower net but only the 48 of the single tower here.
  for i, layer in enumerate(one.conv_layers[1:], start=1):
    fan_in = layer.kernel ** 2 * one.conv_layers[i - 1].filters
    assert layer.init_stddev == pytest.approx(recipes.he_stddev(fan_in))


def test_ablation_flag_reaches_the_config_and_bad_names_are_flag_errors(capsys):
  config = train.config_from_args(train.build_parser().parse_args(['--ablation', 'no_lrn']))[0]
  assert not any(layer.lrn for layer in config.model.conv_layers)
  with pytest.raises(SystemExit) as exit_info:
    train.build_parser().parse_args(['--ablation', 'no_relu'])
  assert exit_info.value.code == 2 and 'no_relu' in capsys.readouterr().err
  with pytest.raises(ValueError, match='unknown ablation'):
    ablations.apply('no_relu', CIFAR10)


# --- statistics -------------------------------------------------------------------------------

def test_colourfulness_of_known_kernels():
  rng = np.random.default_rng(0)
  grey = np.repeat(rng.normal(size=(5, 5, 1, 1)), 3, axis=2)
  opponent = np.concatenate([grey[:, :, :1], -grey[:, :, :1], 0 * grey[:, :, :1]], axis=2)
  red = np.concatenate([grey[:, :, :1], 0 * grey[:, :, :2]], axis=2)
  scores = activations.colourfulness(np.concatenate([grey, opponent, red], axis=3))
  np.testing.assert_allclose(scores, [0.0, 1.0, 2 / 3], atol=1e-12)
  random = activations.colourfulness(rng.normal(size=(5, 5, 3, 2000)))
  assert abs(random.mean() - 2 / 3) < 0.01


def test_specialisation_tells_separated_towers_from_one_population():
  rng = np.random.default_rng(1)
  same = activations.specialisation([rng.uniform(0.3, 0.9, 24), rng.uniform(0.3, 0.9, 24)],
                                    permutations=2000)
  apart = activations.specialisation([rng.uniform(0.0, 0.3, 24), rng.uniform(0.6, 0.9, 24)],
                                     permutations=2000)
  assert same['p_value'] > 0.05 and apart['p_value'] < 0.001
  assert apart['gap'] == pytest.approx(abs(np.subtract(*apart['tower_means'])))
  with pytest.raises(ValueError, match='two towers'):
    activations.specialisation([np.ones(3)])


def test_nearest_matches_brute_force_across_chunks():
  rng = np.random.default_rng(2)
  pool, queries = rng.normal(size=(103, 7)), rng.normal(size=(9, 7))
  indices, distances = activations.nearest(queries, pool, k=5, chunk=10)
  full = np.linalg.norm(queries[:, None] - pool[None], axis=2)
  np.testing.assert_array_equal(indices, np.argsort(full, axis=1)[:, :5])
  np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :5], rtol=1e-9)


def test_confusion_matrix_and_chance_by_counting():
  labels, predicted = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
  matrix = plot_confusion.confusion_matrix(labels, predicted, 3)
  expected = np.zeros((3, 3), int)
  for t, p in zip(labels, predicted):
    expected[t, p] += 1
  np.testing.assert_array_equal(matrix, expected)
  np.testing.assert_array_equal(plot_confusion.most_confused(matrix, 2), [0, 2])
  pool = np.array([0, 1, 1, 1])
  assert plot_retrieval.chance(labels, pool) == pytest.approx(
      np.mean(labels[:, None] == pool[None]))


# --- the tools on a trained run ---------------------------------------------------------------

@pytest.fixture(scope='module')
def run(cifar10_subset_records, tmp_path_factory):
  """A 6-step run of the real-image fixture and its export: (model_dir, saved_model)."""
  model_dir = tmp_path_factory.mktemp('evidence') / 'model'
  assert train.main(['--dataset', 'cifar10', '--data-dir', str(cifar10_subset_records),
                     '--model-dir', str(model_dir), '--batch-size', '16', '--seed', '5',
                     '--max-steps', '6']) == 0
  return model_dir, export.latest_export(str(model_dir / 'export'))


def _model_flags(run, source):
  model_dir, saved_model = run
  return ['--model-dir', str(model_dir)] if source == 'run' else ['--saved-model', saved_model]


def _png_with_content(path):
  with Image.open(path) as image:
    assert image.format == 'PNG'
    return len({p[:3] for p in image.convert('RGB').getdata()}) > 50


@pytest.mark.parametrize('source', ['run', 'saved_model'])
def test_kernel_figure_and_scores(run, source, tmp_path):
  out, scores = tmp_path / 'k.png', tmp_path / 'k.json'
  assert plot_kernels.main(_model_flags(run, source) + [
      '--output', str(out), '--json', str(scores)]) == 0
  assert _png_with_content(out)
  (result,) = json.loads(scores.read_text())['runs']
  kernels = activations.tower_kernels(activations.open_trained(model_dir=str(run[0])))
  np.testing.assert_allclose(result['scores'], [activations.colourfulness(k) for k in kernels],
                             rtol=1e-6)
  assert len(result['scores']) == 2 and 0 < result['p_value'] <= 1


def test_checkpoint_and_export_give_the_same_activations(run, cifar10_subset_records, read_split):
  model_dir, saved_model = run
  from_run, from_export = (
      activations.activations(activations.open_trained(**kind), str(cifar10_subset_records),
                              records.VALIDATION, 'fc7', limit=20)
      for kind in ({'model_dir': str(model_dir)}, {'saved_model': saved_model}))
  assert from_run.values.shape == (20, CIFAR10.model.dense_layers[-1].units)
  np.testing.assert_allclose(from_run.values, from_export.values, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(from_run.labels, from_export.labels)
  # The displayed crops are stored images again (the eval crop of 32x32 is the whole image,
  # and the mean is added back), each with its own label.
  stored = read_split(cifar10_subset_records, records.VALIDATION)
  pixels = np.stack([e['pixels'] for e in stored]).astype(int)
  for image, label in zip(from_run.images, from_run.labels):
    match = np.abs(pixels - image).max(axis=(1, 2, 3)).argmin()
    assert np.abs(pixels[match] - image).max() <= 1
    assert stored[match][records.LABEL] == label


@pytest.mark.parametrize('source', ['run', 'saved_model'])
def test_retrieval_and_confusion_figures(run, source, cifar10_subset_records, tmp_path):
  data = ['--data-dir', str(cifar10_subset_records)]
  retrieval = tmp_path / 'r.json'
  assert plot_retrieval.main(_model_flags(run, source) + data + [
      '--output', str(tmp_path / 'r.png'), '--json', str(retrieval), '--queries', '3',
      '--neighbours', '4', '--score-queries', '30']) == 0
  assert _png_with_content(tmp_path / 'r.png')
  result = json.loads(retrieval.read_text())
  assert result['queries_scored'] == 30 and result['training_images_searched'] == 240
  assert all(0 <= share <= 1 for share in result['same_class_share'].values())
  confusion = tmp_path / 'c.json'
  assert plot_confusion.main(_model_flags(run, source) + data + [
      '--output', str(tmp_path / 'c.png'), '--json', str(confusion)]) == 0
  assert _png_with_content(tmp_path / 'c.png')
  matrix = np.array(json.loads(confusion.read_text())['matrix'])
  assert matrix.shape == (10, 10) and matrix.sum() == 60


@pytest.mark.parametrize('tool, extra, message', [
    (plot_kernels, ['--layer', 'conv2'], 'not the RGB image'),
    (plot_kernels, ['--layer', 'conv9'], 'no conv layer'),
    (plot_retrieval, ['--layer', 'fc9', '--data-dir', 'DATA'], "no layer 'fc9'"),
])
def test_a_missing_layer_is_one_line(run, tool, extra, message, cifar10_subset_records,
                                     tmp_path, capsys):
  extra = [str(cifar10_subset_records) if e == 'DATA' else e for e in extra]
  assert tool.main(_model_flags(run, 'run') + extra + ['--output', str(tmp_path / 'x.png')]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and message in err and '\n' not in err
  assert not (tmp_path / 'x.png').exists()


def test_a_directory_that_is_no_run_is_one_line(tmp_path, capsys):
  assert plot_kernels.main(['--model-dir', str(tmp_path), '--output', str(tmp_path / 'x.png')]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err
