"""The LRN implementations of `layers.local_response_norm` against the reference op.

Every implementation in `config.LRN_IMPLS` must give the values and the gradient of
`tf.nn.local_response_normalization` (TF's `LRN` / `LRNGrad` kernels) to 1e-5, relative,
for both constant sets (the paper's and Caffe's), on post-ReLU activations of the size a
trained AlexNet produces (zeros for about half the units, the rest up to a few hundred, so
that the normaliser differs clearly from bias^beta).

Gradient entries are a difference of two terms (g * d^-beta and the window term) that can
cancel; there float32 rounding of the terms' size remains, in the reference op as well
(measured against float64 NumPy: up to 2.5e-5 elementwise relative for `LRNGrad` itself,
1e-7 of the largest entry). The gradient tolerance is therefore 1e-5 relative per entry or
1e-5 of the largest entry, and a separate test checks that the fast gradient is as close to
the float64 truth as the reference is.
"""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import layers, lrn
from alexnet_tf.config import CAFFE_LRN, LRN_IMPLS, PAPER_LRN, LRNConfig
from alexnet_tf.recipes import IMAGENET_MODEL

tf1 = tf.compat.v1
RTOL = 1e-5
FAST_IMPLS = [impl for impl in LRN_IMPLS if impl != 'reference']
CLOSED_FORM_IMPLS = ['banded_grad', 'fused']  # their own gradients, not TF's autodiff
CONFIGS = [PAPER_LRN, CAFFE_LRN]
CONFIG_IDS = ['paper', 'caffe']


def post_relu(rng, shape, scale=60.0):
  """ReLU of a Gaussian: about half zeros, the rest |N(0, scale)| (float32)."""
  return np.maximum(rng.normal(0.0, scale, size=shape), 0.0).astype(np.float32)


def values_and_gradients(impls, inputs, upstream, lrn_config):
  """{impl: (outputs, d<outputs * upstream>/d inputs)}, all computed in one graph."""
  with tf.Graph().as_default():
    x = tf.constant(inputs)
    fetches = {}
    for impl in impls:
      y = layers.local_response_norm(x, lrn_config, impl, name=f'lrn_{impl}')
      fetches[impl] = (y, tf.gradients(y, x, grad_ys=tf.constant(upstream))[0])
    with tf1.Session() as sess:
      return sess.run(fetches)


def assert_close(actual, expected, what, floor):
  """|actual - expected| <= RTOL * (|expected| + floor * max|expected|), elementwise."""
  scale = np.max(np.abs(expected))
  assert scale > 0
  error = np.max(np.abs(actual.astype(np.float64) - expected) /
                 (np.abs(expected) + floor * scale))
  assert error < RTOL, f'{what}: relative error {error:.2e}'


def float64_lrn_and_gradient(x, upstream, config: LRNConfig):
  """The paper's formula and its gradient (the closed form) in float64 NumPy."""
  x, upstream = x.astype(np.float64), upstream.astype(np.float64)
  channels = x.shape[-1]
  index = np.arange(channels)
  band = (np.abs(index[:, None] - index[None, :]) <= config.depth_radius).astype(np.float64)
  d = config.bias + config.alpha * (x ** 2) @ band
  y = x * d ** -config.beta
  dx = upstream * d ** -config.beta - 2 * config.alpha * config.beta * x * (
      (upstream * y / d) @ band)
  return y, dx


@pytest.mark.parametrize('impl', FAST_IMPLS)
@pytest.mark.parametrize('lrn_config', CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize('shape', [(2, 7, 5, 48), (3, 4, 4, 128), (2, 3, 3, 24)],
                         ids=['imagenet_lrn1_tower', 'imagenet_lrn2_tower', 'cifar_lrn1_tower'])
def test_value_and_gradient_match_reference(impl, lrn_config, shape):
  rng = np.random.default_rng(sum(shape))
  inputs = post_relu(rng, shape)
  upstream = rng.normal(size=shape).astype(np.float32)
  results = values_and_gradients(['reference', impl], inputs, upstream, lrn_config)
  (ref_y, ref_dx), (y, dx) = results['reference'], results[impl]
  assert y.shape == ref_y.shape and y.dtype == np.float32
  assert_close(y, ref_y, f'{impl} values', floor=1e-6)
  assert_close(dx, ref_dx, f'{impl} gradient', floor=1.0)


@pytest.mark.parametrize('lrn_config', CONFIGS, ids=CONFIG_IDS)
def test_gradient_as_accurate_as_reference(lrn_config):
  """Against float64, the fast gradient's worst error is within 2x the reference op's."""
  rng = np.random.default_rng(11)
  shape = (4, 9, 9, 128)
  inputs = post_relu(rng, shape)
  upstream = rng.normal(size=shape).astype(np.float32)
  results = values_and_gradients(LRN_IMPLS, inputs, upstream, lrn_config)
  true_y, true_dx = float64_lrn_and_gradient(inputs, upstream, lrn_config)
  scale = np.max(np.abs(true_dx))
  reference_error = np.max(np.abs(results['reference'][1] - true_dx)) / scale
  for impl in FAST_IMPLS:
    y, dx = results[impl]
    assert np.max(np.abs(y - true_y) / (np.abs(true_y) + 1e-6)) < RTOL
    assert np.max(np.abs(dx - true_dx)) / scale <= 2 * max(reference_error, 1e-7), impl


@pytest.mark.parametrize('impl', CLOSED_FORM_IMPLS)
@pytest.mark.parametrize('lrn_config', CONFIGS, ids=CONFIG_IDS)
def test_closed_form_gradient_matches_finite_differences(lrn_config, impl):
  """The closed form itself, independent of TF's LRNGrad, in float64 NumPy."""
  rng = np.random.default_rng(7)
  inputs = post_relu(rng, (1, 1, 2, 9), scale=150.0)
  upstream = rng.normal(size=inputs.shape)
  dx = values_and_gradients([impl], inputs, upstream.astype(np.float32), lrn_config)[impl][1]
  x = inputs.astype(np.float64)

  def loss(values):
    return np.sum(_numpy_lrn(values, lrn_config) * upstream)

  numeric = np.zeros_like(x)
  step = 1e-3
  for index in np.ndindex(x.shape):
    plus, minus = x.copy(), x.copy()
    plus[index] += step
    minus[index] -= step
    numeric[index] = (loss(plus) - loss(minus)) / (2 * step)
  np.testing.assert_allclose(dx, numeric, rtol=1e-4, atol=1e-5)


def _numpy_lrn(a, config: LRNConfig):
  channels = a.shape[-1]
  out = np.empty_like(a, dtype=np.float64)
  for c in range(channels):
    lo, hi = max(0, c - config.depth_radius), min(channels, c + config.depth_radius + 1)
    window = np.sum(a[..., lo:hi] ** 2, axis=-1)
    out[..., c] = a[..., c] / (config.bias + config.alpha * window) ** config.beta
  return out


@pytest.mark.parametrize('beta', [0.75, 0.5, 1.0, 0.6])
def test_negative_power_matches_pow(beta):
  values = np.linspace(0.5, 500.0, 1001).astype(np.float32)
  with tf.Graph().as_default(), tf1.Session() as sess:
    out = sess.run(lrn.negative_power(tf.constant(values), beta))
  np.testing.assert_allclose(out, values.astype(np.float64) ** -beta, rtol=RTOL)


@pytest.mark.parametrize('impl', CLOSED_FORM_IMPLS)
def test_closed_form_in_a_network_trains_like_reference(impl):
  """Whole-net gradients of the ImageNet conv1+LRN stage agree (the towers' shapes)."""
  rng = np.random.default_rng(3)
  images = rng.normal(0, 60, size=(2, 35, 35, 3)).astype(np.float32)
  grads = {}
  for variant in ('reference', impl):
    with tf.Graph().as_default():
      tf1.set_random_seed(0)
      x = tf.nn.relu(layers.conv2d(tf.constant(images), 48, 11, 4, 'VALID', stddev=0.05))
      y = layers.local_response_norm(x, PAPER_LRN, variant)
      loss = tf.reduce_sum(tf.square(y))
      with tf1.Session() as sess:
        sess.run(tf1.global_variables_initializer())
        grads[variant] = sess.run(tf.gradients(loss, tf1.trainable_variables()))
  for ref, new in zip(grads['reference'], grads[impl]):
    np.testing.assert_allclose(new, ref, rtol=1e-4, atol=1e-4 * np.max(np.abs(ref)))


def test_default_impl_is_listed():
  assert IMAGENET_MODEL.lrn_impl in LRN_IMPLS and 'reference' in LRN_IMPLS


def test_the_registry_names_are_the_configs_names():
  """config.LRN_IMPLS (validation, flags) lists exactly the registry's implementations."""
  assert tuple(lrn.IMPLEMENTATIONS) == LRN_IMPLS
  for spec in lrn.IMPLEMENTATIONS.values():  # a portable equivalent is itself portable
    assert lrn.IMPLEMENTATIONS[spec.portable].portable == spec.portable
    assert not lrn.IMPLEMENTATIONS[spec.portable].needs_kernel


def test_unknown_channel_count_is_rejected():
  with tf.Graph().as_default():
    x = tf1.placeholder(tf.float32, [None, 3, 3, None])
    with pytest.raises(ValueError, match='channel dimension'):
      layers.local_response_norm(x, PAPER_LRN, 'banded_grad')
