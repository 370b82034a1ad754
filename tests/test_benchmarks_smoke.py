"""The benchmarks of benchmarks/ in their tiny smoke mode: they run and write sane JSON.

Benchmarks are run by hand (benchmarks/README.md); here only their structure is checked,
never their speed. The smoke runs use the CIFAR-10 net (batch 2, a few steps) on a
converted dataset of scikit-image's sample photos, in this process.
"""

import json
import os
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'
sys.path.insert(0, str(BENCHMARKS))

# pylint: disable=wrong-import-position,import-error
import common  # noqa: E402
import bench_eval  # noqa: E402
import bench_lrn  # noqa: E402
import bench_serving  # noqa: E402
import bench_train  # noqa: E402


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
  """Shared by the smoke runs, so the sample-photo dataset is converted once."""
  return tmp_path_factory.mktemp('bench_work')


def run_smoke(module, work_dir, tmp_path, *flags):
  path = tmp_path / f'{module.__name__}.json'
  module.main(['--smoke', '--nets', 'cifar10', '--work-dir', str(work_dir),
               '--json', str(path), *flags])
  with open(path, encoding='utf-8') as f:
    results = json.load(f)
  machine = results['machine']
  assert machine['cores'] >= 1 and machine['tensorflow'] and machine['date']
  assert results['settings']['smoke'] is True
  return results


def positive(value):
  return isinstance(value, (int, float)) and value > 0


def test_bench_train_smoke(work_dir, tmp_path):
  results = run_smoke(bench_train, work_dir, tmp_path, '--rounds', '2',
                      '--lrn-impls', 'reference,fused,none')
  assert positive(results['gemm']['flops_per_sec'])
  net = results['nets']['cifar10']
  assert list(net['bare']) == ['reference', 'fused', 'none']
  for impl, bare in net['bare'].items():
    assert bare['lrn_impl'] == impl
    assert positive(bare['images_per_sec']) and positive(bare['peak_rss_gib'])
    # The reported round is one of the two measured ones (the median's lower middle).
    assert len(bare['rounds_images_per_sec']) == 2
    assert bare['images_per_sec'] == min(bare['rounds_images_per_sec'])
    assert len(net['lrn_speedup_rounds_vs_reference'][impl]) == 2
  assert net['lrn_speedup_vs_reference']['reference'] == 1.0
  assert positive(net['product']['images_per_sec'])
  assert net['product']['checkpoint_in_window'] is False  # no evaluation is timed
  assert net['product']['lrn_impl'] == results['default_lrn_impl']
  assert len(net['product']['rounds_images_per_sec']) == 2  # a product loop every round
  assert len(net['loop_over_bare_rounds']) == 2
  assert positive(net['loop_over_bare']) and positive(net['achieved_train_flops_per_sec'])
  assert positive(net['peak_rss_gib_training'])
  assert net['flops_per_image']['train'] > 2 * net['flops_per_image']['forward'] > 0


def test_bench_serving_smoke(work_dir, tmp_path):
  results = run_smoke(bench_serving, work_dir, tmp_path)
  net = results['nets']['cifar10']
  for case in ('savedmodel_session_jpeg', 'savedmodel_jpeg', 'savedmodel_float', 'bare_forward'):
    assert positive(net[case]['batch1']['median_ms'])
    assert positive(net[case]['batch_images_per_sec'])
  assert positive(net['latency_ratio_jpeg_vs_bare'])
  # The three paths compute the same logits from the same weights.
  assert net['max_logit_difference']['float_signature_vs_bare'] < 1e-3
  # bf16 is measured where the machine has it, else reported as not measurable.
  assert {*results['precisions_measured'], *results['precisions_not_measurable']} == {
      'fp32', 'bf16'}
  assert set(net['precision_probability_difference']) == set(
      results['precisions_measured']) - {'fp32'}
  assert net['max_logit_difference']['jpeg_vs_float_signature'] < 1e-3


def test_bench_eval_smoke(work_dir, tmp_path):
  results = run_smoke(bench_eval, work_dir, tmp_path)
  net = results['nets']['cifar10']
  assert positive(net['ten_crop']['images_per_sec'])
  assert net['ten_crop']['crops_per_sec'] == pytest.approx(10 * net['ten_crop']['images_per_sec'])
  assert positive(net['centre_crop']['images_per_sec'])


def test_bench_lrn_smoke(tmp_path):
  path = tmp_path / 'lrn.json'
  bench_lrn.main(['--smoke', '--json', str(path)])
  with open(path, encoding='utf-8') as f:
    results = json.load(f)
  assert set(results['shapes']) == set(bench_lrn.SHAPES)
  for case in results['shapes'].values():
    assert set(case['impls']) == set(common.config_lib.LRN_IMPLS)
    for timing in case['impls'].values():
      assert positive(timing['forward_ms']) and positive(timing['forward_backward_ms'])
      assert timing['max_rel_diff_value'] < 1e-5 and timing['max_diff_gradient_of_max'] < 1e-5


def test_imagenet_flop_count_is_the_papers_net():
  """The well-known ~0.72 G multiply-adds of the two-tower net, layer by layer."""
  model = common.net_config('imagenet').model
  macs = {row['name']: row['macs'] for row in common.layer_flops(model)}
  assert macs == {
      'conv1': 55 * 55 * 96 * 11 * 11 * 3,
      'conv2': 27 * 27 * 256 * 5 * 5 * 48,  # own: each tower's kernels read 48 maps
      'conv3': 13 * 13 * 384 * 3 * 3 * 256,  # full
      'conv4': 13 * 13 * 384 * 3 * 3 * 192,
      'conv5': 13 * 13 * 256 * 3 * 3 * 192,
      'fc6': 9216 * 4096, 'fc7': 4096 * 4096, 'fc8': 4096 * 1000,
  }
  flops = common.flops_per_image(model)
  assert flops['forward'] == pytest.approx(2 * 724.4e6, rel=1e-3)


def test_imagenet_sized_photo_dataset(tmp_path):
  """The converter on the sample photos gives 256x256 JPEG shards with a mean image."""
  data_dir = common.dataset_for('imagenet', str(tmp_path), 12, None, imagenet_classes=4)
  described = common.describe_data(data_dir)
  assert tuple(described['image_size']) == (256, 256)
  assert described['num_classes'] == 4
  assert sum(described['counts'].values()) == 12
  assert os.path.isfile(os.path.join(data_dir, 'mean_image.npy'))


def test_bench_train_smoke_compares_precisions(work_dir, tmp_path, monkeypatch):
  """bf16 where the machine lacks it: not measurable; with --allow-emulated measured in the
  same rounds as fp32, with its ratios over fp32 (figures flagged as emulated)."""
  from alexnet_tf import precision  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(precision, 'detect', lambda devices: precision.Hardware(frozenset({'avx2'})))
  results = run_smoke(bench_train, work_dir, tmp_path, '--lrn-impls', 'fused',
                      '--precisions', 'fp32,bf16', '--allow-emulated')
  assert results['precisions_measured'] == ['fp32', 'bf16']
  assert list(results['precisions_emulated']) == ['bf16']
  net = results['nets']['cifar10']
  bf16 = net['precisions']['bf16']
  assert bf16['bare']['fused']['precision'] == 'bf16' and bf16['product']['precision'] == 'bf16'
  assert net['precisions']['fp32']['bare'] == net['bare']  # the baseline's old keys
  assert positive(bf16['speedup_over_baseline']['product loop'])
  assert positive(bf16['loop_over_bare'])
  with pytest.raises(SystemExit, match='none of --precisions bf16'):
    bench_train.main(['--smoke', '--nets', 'cifar10', '--precisions', 'bf16'])
