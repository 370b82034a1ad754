"""The fused LRN C++ kernels (alexnet_tf/kernels): every code path against float64 NumPy,
bad input, the build and its cache, and the rule that exported graphs never contain them.

tests/test_lrn_impls.py already checks 'fused' against TF's own op with the paper's and
Caffe's constants; these tests reach the branches those constants do not (other betas and
radii, channel counts narrower than the window, empty batches).
"""

import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf import kernels, layers, lrn
from alexnet_tf import model_fn as mf
from alexnet_tf import schedule
from alexnet_tf.config import LRNConfig

from test_lrn_impls import float64_lrn_and_gradient, post_relu  # pylint: disable=import-error

tf1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys


def fused_value_and_gradient(inputs, upstream, config: LRNConfig):
  with tf.Graph().as_default():
    x = tf.constant(inputs)
    y = layers.local_response_norm(x, config, 'fused')
    dx = tf.gradients(y, x, grad_ys=tf.constant(upstream))[0]
    with tf1.Session() as sess:
      return sess.run([y, dx])


@pytest.mark.parametrize('beta', [0.75, 0.5, 1.0, 0.6])  # radius 2 and 0.75: specialised
@pytest.mark.parametrize('radius,channels', [(2, 48), (0, 8), (3, 5), (2, 3), (5, 130)])
def test_fused_matches_float64_formula(beta, radius, channels):
  config = LRNConfig(depth_radius=radius, bias=2.0, alpha=1e-3, beta=beta)
  rng = np.random.default_rng(radius * 1000 + channels)
  inputs = post_relu(rng, (2, 3, 4, channels), scale=20.0)
  upstream = rng.normal(size=inputs.shape).astype(np.float32)
  y, dx = fused_value_and_gradient(inputs, upstream, config)
  true_y, true_dx = float64_lrn_and_gradient(inputs, upstream, config)
  np.testing.assert_allclose(y, true_y, rtol=1e-5, atol=1e-6 * np.abs(true_y).max())
  np.testing.assert_allclose(dx, true_dx, rtol=1e-5, atol=1e-5 * np.abs(true_dx).max())


def test_fused_takes_any_rank_and_empty_batches():
  config = cfg.PAPER_LRN
  rng = np.random.default_rng(0)
  for shape in [(7,), (5, 16), (0, 6, 6, 48)]:
    inputs = post_relu(rng, shape)
    upstream = rng.normal(size=shape).astype(np.float32)
    y, dx = fused_value_and_gradient(inputs, upstream, config)
    true_y, true_dx = float64_lrn_and_gradient(inputs, upstream, config)
    assert y.shape == dx.shape == shape
    np.testing.assert_allclose(y, true_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, true_dx, rtol=1e-5, atol=1e-5)


def bf16(values: np.ndarray) -> np.ndarray:
  """float32 `values` rounded to the nearest bfloat16 (as float32)."""
  return tf.cast(tf.cast(values, tf.bfloat16), tf.float32).numpy()


def lrn_in_dtype(impl, inputs, upstream, config: LRNConfig, dtype):
  """(y, dx) of the LRN `impl` on `inputs` fed in `dtype` (as float32 arrays), the dtype of
  both, and {op type: its T attr} of the graph's LRN ops."""
  with tf.Graph().as_default() as graph:
    x = tf.constant(inputs, dtype)
    y = layers.local_response_norm(x, config, impl)
    dx = tf.gradients(y, x, grad_ys=tf.constant(upstream, dtype))[0]
    lrn_ops = {op.type: op.get_attr('T') for op in graph.get_operations()
               if op.type in ('AlexnetLrn', 'AlexnetLrnGrad', 'LRN', 'LRNGrad')}
    with tf1.Session() as sess:
      values = sess.run([tf.cast(y, tf.float32), tf.cast(dx, tf.float32)])
  return values, (y.dtype, dx.dtype), lrn_ops


BF16_CONFIGS = [cfg.PAPER_LRN, cfg.CAFFE_LRN, LRNConfig(depth_radius=3, bias=2.0, alpha=1e-3,
                                                        beta=0.6)]


@pytest.mark.parametrize('impl', cfg.LRN_IMPLS)
@pytest.mark.parametrize('config', BF16_CONFIGS, ids=['paper', 'caffe', 'generic'])
def test_bf16_lrn_matches_float64_within_bf16_tolerance(impl, config):
  """Every implementation in a bf16 graph: bf16 in and out, values and gradient within 1e-2
  (relative, or of the largest entry where the gradient's two terms cancel) of the float64
  formula on the same bf16 inputs. Only TF's op runs in float32 (between casts)."""
  rng = np.random.default_rng(7)
  inputs = bf16(post_relu(rng, (2, 5, 5, 48), scale=60.0))
  upstream = bf16(rng.normal(size=inputs.shape).astype(np.float32))
  (y, dx), dtypes, lrn_ops = lrn_in_dtype(impl, inputs, upstream, config, tf.bfloat16)
  true_y, true_dx = float64_lrn_and_gradient(inputs, upstream, config)
  assert dtypes == (tf.bfloat16, tf.bfloat16)
  expected_ops = {'fused': {'AlexnetLrn': tf.bfloat16, 'AlexnetLrnGrad': tf.bfloat16},
                  'reference': {'LRN': tf.float32, 'LRNGrad': tf.float32}}
  assert lrn_ops == expected_ops.get(impl, {})
  np.testing.assert_allclose(y, true_y, rtol=1e-2, atol=1e-2 * np.abs(true_y).max())
  np.testing.assert_allclose(dx, true_dx, rtol=1e-2, atol=1e-2 * np.abs(true_dx).max())


def test_fused_bf16_computes_in_float32_and_rounds_once():
  """The bf16 kernels widen their inputs, do the float32 kernels' arithmetic and round the
  result once: on the same (bf16-representable) inputs, each bf16 op's output is the float32
  op's output rounded to bf16, bit for bit."""
  rng = np.random.default_rng(8)
  library = kernels.load()
  for config in BF16_CONFIGS:
    attrs = dict(depth_radius=config.depth_radius, bias=config.bias, alpha=config.alpha,
                 beta=config.beta)
    x = bf16(post_relu(rng, (3, 7, 7, 128)))
    g = bf16(rng.normal(size=x.shape).astype(np.float32))
    y = bf16(fused_value_and_gradient(x, g, config)[0])
    outputs = {}
    for dtype in (tf.float32, tf.bfloat16):
      with tf.Graph().as_default():
        x_, g_, y_ = (tf.constant(v, dtype) for v in (x, g, y))
        forward = library.alexnet_lrn(x_, **attrs)
        backward = library.alexnet_lrn_grad(g_, x_, y_, **attrs)
        with tf1.Session() as sess:
          outputs[dtype] = sess.run([tf.cast(forward, tf.float32), tf.cast(backward, tf.float32)])
    for low, high in zip(outputs[tf.bfloat16], outputs[tf.float32]):
      np.testing.assert_array_equal(low, bf16(high))


def test_fp16_lrns_compute_in_float32_between_casts():
  """fp16 graphs: a square of an activation over 256 overflows fp16, so every LRN runs in
  float32 between casts; the result is fp16 and finite where fp16 math would not be."""
  inputs = np.full((1, 2, 2, 8), 300.0, np.float32)  # 300^2 = 90000 > fp16's 65504
  upstream = np.ones_like(inputs)
  for impl in ('fused', 'banded_grad'):
    (y, dx), dtypes, lrn_ops = lrn_in_dtype(impl, inputs, upstream, cfg.PAPER_LRN, tf.float16)
    assert dtypes == (tf.float16, tf.float16)
    assert set(lrn_ops.values()) <= {tf.float32}
    true_y, true_dx = float64_lrn_and_gradient(inputs, upstream, cfg.PAPER_LRN)
    np.testing.assert_allclose(y, true_y, rtol=2e-3)
    np.testing.assert_allclose(dx, true_dx, rtol=2e-3, atol=2e-3 * np.abs(true_dx).max())


def test_fused_rejects_other_dtypes_and_scalars():
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match='float32'):
      kernels.lrn(tf.zeros([2, 4], tf.float64), 2, 2.0, 1e-4, 0.75)
    with pytest.raises(ValueError, match='rank'):
      kernels.lrn(tf.constant(1.0), 2, 2.0, 1e-4, 0.75)


def test_fused_checks_the_rank_at_run_time_when_the_graph_cannot():
  with tf.Graph().as_default():
    x = tf1.placeholder(tf.float32)  # unknown rank: only the kernel sees the scalar
    y = kernels.lrn(x, 2, 2.0, 1e-4, 0.75)
    with tf1.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError, match='rank >= 1'):
      sess.run(y, {x: 1.0})


def test_fused_rejects_a_non_positive_bias_at_run_time():
  with tf.Graph().as_default():
    y = kernels.lrn(tf.ones([2, 4]), 2, 0.0, 1e-4, 0.75)
    with tf1.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError, match='bias'):
      sess.run(y)


def test_fused_runs_on_two_threads_like_one():
  """The kernels shard rows over the intra-op pool; the result must not depend on it."""
  rng = np.random.default_rng(5)
  inputs = post_relu(rng, (4, 13, 13, 128))
  upstream = rng.normal(size=inputs.shape).astype(np.float32)
  results = []
  for threads in (1, 2):
    with tf.Graph().as_default():
      x = tf.constant(inputs)
      y = layers.local_response_norm(x, cfg.PAPER_LRN, 'fused')
      dx = tf.gradients(y, x, grad_ys=tf.constant(upstream))[0]
      session_config = tf1.ConfigProto(intra_op_parallelism_threads=threads)
      with tf1.Session(config=session_config) as sess:
        results.append(sess.run([y, dx]))
  for one, two in zip(*results):
    np.testing.assert_array_equal(one, two)


def test_build_is_cached(tmp_path):
  kernels.library_path(tmp_path)  # builds once into the empty cache
  built = list(tmp_path.iterdir())
  assert len(built) == 1 and built[0].suffix == '.so'
  mtime = built[0].stat().st_mtime_ns
  assert kernels.library_path(tmp_path) == built[0]
  assert built[0].stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_missing_compiler_is_a_clear_error(tmp_path):
  with pytest.raises(kernels.KernelBuildError, match="no C.. compiler 'no-such-g..'.*banded_grad"):
    kernels.library_path(tmp_path, compiler='no-such-g++')
  assert not list(tmp_path.iterdir())  # nothing half-built left behind


def test_failed_compile_names_the_command_and_leaves_nothing(tmp_path):
  with pytest.raises(kernels.KernelBuildError, match=r'lrn_kernels.cc failed \(exit 1\)'):
    kernels.library_path(tmp_path, compiler='false')
  assert not list(tmp_path.iterdir())


def test_unwritable_cache_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(kernels.KernelBuildError, match=kernels.CACHE_ENV):
    kernels.library_path(blocker / 'cache')


def test_exported_graphs_use_a_portable_lrn():
  """PREDICT graphs (the ones exported for TF Serving) never contain the custom ops."""
  model = dataclasses.replace(recipes.CIFAR10_MODEL, lrn_impl='fused')
  model_fn = mf.make_model_fn(model, cfg.TrainConfig(), schedule.constant(0.01))
  op_types = {}
  for mode in (ModeKeys.TRAIN, ModeKeys.PREDICT):
    with tf.Graph().as_default() as graph:
      model_fn({'image': tf.zeros([2, 32, 32, 3])}, tf.zeros([2], tf.int32), mode)
      op_types[mode] = {op.type for op in graph.get_operations()}
  assert {'AlexnetLrn', 'AlexnetLrnGrad'} <= op_types[ModeKeys.TRAIN]
  assert not any(t.startswith('Alexnet') for t in op_types[ModeKeys.PREDICT])
  assert lrn.resolve('fused', lrn.EXPORT) == 'banded_grad'



def test_without_a_compiler_the_run_falls_back_to_the_plain_op_lrn(monkeypatch, caplog):
  cpus = ('/cpu:0',)
  assert lrn.resolve('fused', lrn.IN_PROCESS, cpus) == 'fused'  # here the kernel builds

  def no_compiler():
    raise kernels.KernelBuildError("no C++ compiler 'g++' to build lrn_kernels.cc")

  monkeypatch.setattr(kernels, 'load', no_compiler)
  with caplog.at_level(logging.WARNING, logger='alexnet_tf.lrn'):
    assert lrn.resolve('fused', lrn.IN_PROCESS, cpus) == lrn.IMPLEMENTATIONS['fused'].portable
  assert "no C++ compiler 'g++'" in caplog.text
  assert lrn.resolve('reference', lrn.IN_PROCESS, cpus) == 'reference'


def test_export_never_loads_the_kernel(monkeypatch):
  def forbidden():
    raise AssertionError('resolving an exported LRN loaded the kernel library')

  monkeypatch.setattr(kernels, 'load', forbidden)
  for impl in cfg.LRN_IMPLS:
    assert lrn.resolve(impl, lrn.EXPORT) == lrn.IMPLEMENTATIONS[impl].portable
    assert not lrn.IMPLEMENTATIONS[lrn.resolve(impl, lrn.EXPORT)].needs_kernel


def test_towers_on_gpus_use_the_plain_op_lrn(monkeypatch):
  """The kernels are CPU-only: on a machine with GPUs, GPU towers would send LRN to the CPU."""
  fused = dataclasses.replace(recipes.IMAGENET_MODEL, lrn_impl='fused')  # towers /gpu:0, /gpu:1
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: ['GPU:0', 'GPU:1'] if kind == 'GPU' else [])
  assert lrn.resolve('fused', lrn.IN_PROCESS, fused.tower_devices) == 'banded_grad'
  assert lrn.resolve('fused', lrn.IN_PROCESS, ('/cpu:0', '/cpu:1')) == 'fused'


def test_a_failed_build_is_tried_once_per_process(monkeypatch):
  attempts = []

  def failing_build():
    attempts.append(1)
    raise kernels.KernelBuildError('compiling lrn_kernels.cc failed (exit 1)')

  monkeypatch.setattr(kernels, '_library', None)
  monkeypatch.setattr(kernels, '_failure', None)
  monkeypatch.setattr(kernels, 'library_path', failing_build)
  assert 'exit 1' in kernels.load_error()
  assert 'exit 1' in kernels.load_error()
  with pytest.raises(kernels.KernelBuildError, match='exit 1'):
    kernels.load()
  assert len(attempts) == 1
