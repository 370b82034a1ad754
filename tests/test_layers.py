"""Unit tests of alexnet_tf.layers against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import layers
from alexnet_tf.config import CAFFE_LRN, PAPER_LRN, LRNConfig

tf1 = tf.compat.v1


def numpy_lrn(a, config: LRNConfig):
  """The paper's formula (section 3.3), written out: a sum over the clipped channel window."""
  channels = a.shape[-1]
  out = np.empty_like(a, dtype=np.float64)
  for c in range(channels):
    lo, hi = max(0, c - config.depth_radius), min(channels, c + config.depth_radius + 1)
    window = np.sum(a[..., lo:hi].astype(np.float64) ** 2, axis=-1)
    out[..., c] = a[..., c] / (config.bias + config.alpha * window) ** config.beta
  return out


def run(fetches, feed=None):
  with tf1.Session() as sess:
    sess.run(tf1.global_variables_initializer())
    return sess.run(fetches, feed)


@pytest.mark.parametrize('impl', ['reference', 'banded'])
@pytest.mark.parametrize('lrn_config', [PAPER_LRN, CAFFE_LRN], ids=['paper', 'caffe'])
def test_lrn_matches_numpy_formula(impl, lrn_config):
  rng = np.random.default_rng(0)
  # Post-ReLU-like activations large enough that the normaliser differs clearly from k^beta.
  a = np.abs(rng.normal(0, 40, size=(2, 5, 4, 12))).astype(np.float32)
  with tf.Graph().as_default():
    out = run(layers.local_response_norm(tf.constant(a), lrn_config, impl))
  expected = numpy_lrn(a, lrn_config)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # The constants matter: the other variant must give a different answer on this input.
  other = CAFFE_LRN if lrn_config is PAPER_LRN else PAPER_LRN
  assert np.max(np.abs(numpy_lrn(a, other) - expected)) > 1e-2


def test_lrn_constants_are_the_papers():
  assert (PAPER_LRN.depth_radius * 2 + 1, PAPER_LRN.bias, PAPER_LRN.alpha, PAPER_LRN.beta) == (
      5, 2.0, 1e-4, 0.75)
  # Caffe divides alpha by n and uses k = 1.
  assert CAFFE_LRN.alpha == pytest.approx(2e-5) and CAFFE_LRN.bias == 1.0


def test_banded_lrn_gradient_equals_reference():
  rng = np.random.default_rng(1)
  a = rng.normal(0, 30, size=(2, 3, 3, 16)).astype(np.float32)
  upstream = rng.normal(size=a.shape).astype(np.float32)
  with tf.Graph().as_default():
    x = tf.constant(a)
    grads = [tf.gradients(layers.local_response_norm(x, PAPER_LRN, impl) * upstream, x)[0]
             for impl in ('reference', 'banded')]
    reference, banded = run(grads)
  np.testing.assert_allclose(banded, reference, rtol=1e-4, atol=1e-6)


def test_unknown_lrn_impl_is_rejected():
  with tf.Graph().as_default(), pytest.raises(ValueError, match='unknown LRN'):
    layers.local_response_norm(tf.zeros([1, 2, 2, 4]), PAPER_LRN, impl='fast?')


def test_conv2d_matches_numpy_and_creates_named_variables():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 7, 7, 2)).astype(np.float32)
  with tf.Graph().as_default():
    y = layers.conv2d(tf.constant(x), filters=3, kernel=3, stride=2, padding='VALID',
                      bias_init=1.0, scope='convx')
    variables = {v.op.name: v for v in tf1.global_variables()}
    assert sorted(variables) == ['convx/biases', 'convx/weights']
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      out, w, b = sess.run([y, variables['convx/weights'], variables['convx/biases']])
  np.testing.assert_array_equal(b, np.ones(3, np.float32))
  expected = np.zeros((1, 3, 3, 3))
  for i in range(3):
    for j in range(3):
      patch = x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      expected[0, i, j] = np.tensordot(patch, w, axes=3) + b
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [224, 226])
def test_valid_conv_rejects_inputs_that_do_not_tile(size):
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match=f'{size} does not fit .*11x11 window with stride 4'):
      layers.conv2d(tf.zeros([1, size, size, 3]), 4, 11, stride=4, padding='VALID')


def test_overlapping_max_pool_matches_numpy():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 7, 7, 2)).astype(np.float32)
  with tf.Graph().as_default():
    out = run(layers.max_pool(tf.constant(x), 3, 2, 'VALID'))
  expected = np.array([[[x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1))
                         for j in range(3)] for i in range(3)]])
  np.testing.assert_array_equal(out, expected)


def test_dense_matches_numpy():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 5)).astype(np.float32)
  with tf.Graph().as_default():
    y = layers.dense(tf.constant(x), 4, bias_init=1.0, scope='fc')
    weights, = [v for v in tf1.global_variables() if v.op.name == 'fc/weights']
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      out, w = sess.run([y, weights])
  np.testing.assert_allclose(out, x @ w + 1.0, rtol=1e-5)


def test_dropout_only_when_training():
  x = np.ones((64, 256), np.float32)
  with tf.Graph().as_default():
    tf1.set_random_seed(0)
    off, on = run([layers.dropout(tf.constant(x), 0.5, training=False),
                   layers.dropout(tf.constant(x), 0.5, training=True)])
  np.testing.assert_array_equal(off, x)
  # Inverted dropout: kept units are scaled by 1 / (1 - rate), about half are dropped.
  assert set(np.unique(on)) == {0.0, 2.0}
  assert 0.45 < np.mean(on == 0.0) < 0.55


def test_batch_norm_matches_numpy_and_updates_its_moving_statistics():
  x = np.random.default_rng(4).normal(3.0, 2.0, size=(8, 5, 5, 6)).astype(np.float32)
  with tf.Graph().as_default():
    inputs = tf.constant(x)
    with tf.compat.v1.variable_scope('conv1'):
      train = layers.batch_norm(inputs, training=True)
    with tf.compat.v1.variable_scope('conv1', reuse=True):
      test = layers.batch_norm(inputs, training=False)
    names = sorted(v.op.name for v in tf.compat.v1.global_variables())
    assert names == ['conv1/batch_norm/beta', 'conv1/batch_norm/gamma',
                     'conv1/batch_norm/moving_mean', 'conv1/batch_norm/moving_variance']
    assert sorted(v.op.name for v in tf.compat.v1.trainable_variables()) == names[:2]
    updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    assert len(updates) == 2  # only the training graph updates
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      before, trained = sess.run([test, train])
      sess.run(updates)
      after = sess.run(test)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  eps = layers.BATCH_NORM_EPSILON
  np.testing.assert_allclose(trained, (x - mean) / np.sqrt(var + eps), rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(before, x / np.sqrt(1 + eps), rtol=1e-5)  # moving: 0 and 1
  # One update moves the moving statistics (1 - decay) of the way to the batch's (the
  # variance unbiased, n / (n - 1), as the fused kernel reports it).
  n = x.size // x.shape[-1]
  step = 1 - layers.BATCH_NORM_DECAY
  moving_mean, moving_var = step * mean, 1 + step * (var * n / (n - 1) - 1)
  np.testing.assert_allclose(after, (x - moving_mean) / np.sqrt(moving_var + eps), rtol=1e-4)
