"""The layers of AlexNet as explicit `tf.compat.v1` graph ops.

Every layer creates its variables with `tf.compat.v1.get_variable` inside the caller's
variable scope, so checkpoints have stable names (`alexnet/tower0/conv2/weights`) and
`reuse` works as in any TF1 model. Nothing here knows about towers, datasets or losses.
"""

import numpy as np
import tensorflow as tf

from alexnet_tf import kernels
from alexnet_tf.config import LRN_IMPLS, LRNConfig

tf1 = tf.compat.v1

WEIGHTS = 'weights'
BIASES = 'biases'


def _variables(weight_shape, num_outputs, stddev, bias_init, dtype):
  weights = tf1.get_variable(WEIGHTS, weight_shape, dtype=dtype,
                             initializer=tf1.random_normal_initializer(0.0, stddev))
  biases = tf1.get_variable(BIASES, [num_outputs], dtype=dtype,
                            initializer=tf1.constant_initializer(bias_init))
  return weights, biases


def conv2d(inputs, filters, kernel, stride=1, padding='SAME', bias_init=0.0, stddev=0.01,
           scope='conv'):
  """Convolution plus bias, no activation.

  Args:
    inputs: [batch, height, width, in_channels].
    filters: number of output channels.
    kernel: square kernel side.
    stride: square stride.
    padding: 'VALID' or 'SAME'. VALID raises ValueError when the stride does not tile the
      input exactly, because silently dropping border pixels (224 -> 54, the paper's
      typo) changes every later shape.
    bias_init: constant initial bias (the paper uses 1 to give ReLUs positive inputs).
    stddev: standard deviation of the zero-mean Gaussian weights.
    scope: variable scope name.

  Returns:
    [batch, out_height, out_width, filters].
  """
  with tf1.variable_scope(scope):
    in_channels = inputs.shape[-1]
    if in_channels is None:
      raise ValueError(f'{scope}: the channel dimension of the input must be known')
    _check_exact_tiling(inputs, kernel, stride, padding, scope)
    weights, biases = _variables([kernel, kernel, int(in_channels), filters], filters, stddev,
                                 bias_init, inputs.dtype)
    outputs = tf.nn.conv2d(inputs, weights, strides=[1, stride, stride, 1], padding=padding)
    return tf.nn.bias_add(outputs, biases)


def dense(inputs, units, bias_init=0.0, stddev=0.01, scope='fc'):
  """Fully connected layer plus bias, no activation: [batch, in] -> [batch, units]."""
  with tf1.variable_scope(scope):
    in_units = inputs.shape[-1]
    if inputs.shape.rank != 2 or in_units is None:
      raise ValueError(f'{scope}: expected a [batch, features] input with known features, '
                       f'got shape {inputs.shape}')
    weights, biases = _variables([int(in_units), units], units, stddev, bias_init,
                                 inputs.dtype)
    return tf.nn.bias_add(tf.matmul(inputs, weights), biases)


def max_pool(inputs, size=3, stride=2, padding='VALID', name='pool'):
  """Max pooling; size 3 stride 2 is the paper's overlapping pooling (section 3.4).

  [batch, height, width, channels] -> [batch, out_height, out_width, channels].
  """
  _check_exact_tiling(inputs, size, stride, padding, name)
  return tf.nn.max_pool2d(inputs, ksize=size, strides=stride, padding=padding, name=name)


def _check_exact_tiling(inputs, window, stride, padding, name):
  if padding != 'VALID':
    return
  for axis, label in ((1, 'height'), (2, 'width')):
    size = inputs.shape[axis]
    if size is None:
      continue
    if size < window or (size - window) % stride:
      raise ValueError(
          f'{name}: input {label} {size} does not fit a {window}x{window} window with '
          f'stride {stride} and VALID padding ({size} - {window} is not a multiple of '
          f'{stride}); the trailing pixels would be dropped. AlexNet takes 227x227 inputs: '
          f'the paper\'s "224" is a known error.')


def local_response_norm(inputs, config: LRNConfig, impl='reference', name='lrn'):
  """Local response normalisation across channels (paper section 3.3).

  b[..., c] = a[..., c] / (bias + alpha * sum_{|c' - c| <= depth_radius} a[..., c']^2)^beta

  Args:
    inputs: [batch, height, width, channels] (any rank >= 1 with a known last dimension for
      the banded implementations).
    config: the constants; `alpha` multiplies the plain sum (TF convention).
    impl: one of `config.LRN_IMPLS`:
      'reference': `tf.nn.local_response_normalization` and TF's `LRNGrad`.
      'banded': the windowed sum of squares as a matrix product with a 0/1 band matrix
        (the GEMM kernels), gradient by automatic differentiation.
      'banded_grad': the band-matrix forward plus its own closed-form gradient, written with
        the same windowed sum (`banded_grad_lrn`); the fastest made of TF ops.
      'fused': the same closed form as two C++ kernels, one pass over memory each way
        (`alexnet_tf.kernels`, compiled at first use); float32 only.
    name: op name.

  Returns:
    [batch, height, width, channels], same dtype.
  """
  if impl == 'reference':
    return tf.nn.local_response_normalization(
        inputs, depth_radius=config.depth_radius, bias=config.bias, alpha=config.alpha,
        beta=config.beta, name=name)
  if impl == 'banded':
    return _banded_lrn(inputs, config, name)
  if impl == 'banded_grad':
    return banded_grad_lrn(inputs, config, name)
  if impl == 'fused':
    return kernels.lrn(inputs, config.depth_radius, config.bias, config.alpha, config.beta,
                       name=name)
  raise ValueError(f'unknown LRN implementation {impl!r}; use one of {LRN_IMPLS}')


def lrn_band_matrix(channels, depth_radius, value=1.0):
  """[channels, channels] matrix with `value` where |i - j| <= depth_radius, 0 elsewhere.

  Right-multiplying [n, channels] rows by it sums each channel's window (clipped at the
  first and last channel, as the LRN window is); it is symmetric, so it is its own transpose.
  """
  index = np.arange(channels)
  band = np.abs(index[:, None] - index[None, :]) <= depth_radius
  return (value * band).astype(np.float32)


def _channels(inputs, name):
  channels = inputs.shape[-1]
  if inputs.shape.rank is None or channels is None:
    raise ValueError(f'{name}: the channel dimension of the input must be known, got shape '
                     f'{inputs.shape}')
  return int(channels)


def _banded_lrn(inputs, config, name):
  with tf1.name_scope(name):
    channels = _channels(inputs, name)
    band = tf.constant(lrn_band_matrix(channels, config.depth_radius), dtype=inputs.dtype)
    squares = tf.reshape(tf.square(inputs), [-1, channels])
    window_sums = tf.reshape(tf.matmul(squares, band), tf.shape(inputs))
    scale = tf.pow(config.bias + config.alpha * window_sums, -config.beta)
    return tf.multiply(inputs, scale, name='output')


def negative_power(x, beta):
  """x ** -beta for x > 0, elementwise, same shape.

  TF's CPU `Pow` is a scalar loop (measured: 3x the time of the rest of a forward LRN);
  beta 0.75 (the paper's and Caffe's), 0.5 and 1 use the vectorised rsqrt/sqrt/reciprocal
  kernels instead, any other beta exp(-beta * log(x)). All agree with `pow` to ~1e-7.
  """
  if beta == 0.75:
    root = tf.math.rsqrt(x)  # x^-1/2
    return root * tf.sqrt(root)  # x^-1/2 * x^-1/4
  if beta == 0.5:
    return tf.math.rsqrt(x)
  if beta == 1.0:
    return tf.math.reciprocal(x)
  return tf.exp(-beta * tf.math.log(x))


def banded_grad_lrn(inputs, config: LRNConfig, name='lrn'):
  """LRN with band-matrix window sums in both directions and a closed-form gradient.

  With S the windowed channel sum (a symmetric band matrix, S = S^T),
    d = bias + alpha * S(x^2),   y = x * d^-beta,
    dL/dx = g * d^-beta - 2 * alpha * beta * x * S(g * y / d)      (g = dL/dy),
  because dy_i/dx_j = [i = j] d_i^-beta - 2 alpha beta x_i x_j d_i^(-beta-1) [|i - j| <= r].
  Each S is one [n, C] x [C, C] GEMM (with alpha, resp. -2 alpha beta, folded into the band
  and the bias fused into the forward one); everything else is a handful of elementwise
  kernels over tensors kept from the forward pass. TF's `LRNGrad` on CPU instead recomputes
  every window and calls `pow` per element and window position: measured 3-4x the cost of
  this whole forward and backward pair. Values agree with the reference op to ~1e-6
  relative (tests/test_lrn_impls.py).

  Second derivatives would go through the backward's ops by automatic differentiation;
  they are untested (TF's own `LRNGrad` has no gradient at all) and training needs none.

  Args:
    inputs: [..., channels] float, channels known (typically [batch, height, width, C]).
    config: the LRN constants.
    name: name scope.

  Returns:
    The same shape and dtype as `inputs`.
  """
  channels = _channels(inputs, name)
  dtype = inputs.dtype
  radius, alpha, beta = config.depth_radius, config.alpha, config.beta
  with tf1.name_scope(name):
    forward_band = tf.constant(lrn_band_matrix(channels, radius, alpha), dtype=dtype,
                               name='forward_band')
    backward_band = tf.constant(lrn_band_matrix(channels, radius, -2.0 * alpha * beta),
                                dtype=dtype, name='backward_band')
    bias = tf.fill([channels], tf.constant(config.bias, dtype))
    shape = tf.shape(inputs)

    @tf.custom_gradient
    def lrn(x):
      rows = tf.reshape(x, [-1, channels])  # [n, C]
      # [n, C]: bias + alpha * window sums, as MatMul + BiasAdd (fused by the remapper)
      denominator = tf.nn.bias_add(tf.matmul(tf.square(rows), forward_band), bias)
      scale = negative_power(denominator, beta)  # [n, C]
      outputs = rows * scale  # [n, C]

      def grad(upstream):
        g = tf.reshape(upstream, [-1, channels])  # [n, C]
        window_grad = tf.matmul(g * outputs / denominator, backward_band)  # [n, C]
        return tf.reshape(g * scale + rows * window_grad, shape)

      return tf.reshape(outputs, shape), grad

    return tf.identity(lrn(inputs), name='output')


def dropout(inputs, rate, training, name='dropout'):
  """Inverted dropout when `training` (a Python bool) is true, the identity otherwise.

  Scaling kept units by 1 / (1 - rate) at training time is equivalent to the paper's
  "multiply the outputs by 0.5 at test time" and leaves the test graph untouched. The op
  seed comes from the graph-level seed, so a seeded graph drops the same units every time.
  """
  if not training or rate == 0.0:
    return inputs
  return tf.nn.dropout(inputs, rate=rate, name=name)
