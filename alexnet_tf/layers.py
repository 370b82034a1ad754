"""The layers of AlexNet as explicit `tf.compat.v1` graph ops.

Every layer creates its variables with `tf.compat.v1.get_variable` inside the caller's
variable scope, so checkpoints have stable names (`alexnet/tower0/conv2/weights`) and
`reuse` works as in any TF1 model. Nothing here knows about towers, datasets or losses.

Mixed precision: the layers compute in their input's dtype. Variables of bfloat16 or
float16 layers are float32 and are read through a cast (`precision.read_variable`), so
checkpoints, the optimiser and weight decay see float32 whatever the compute dtype.
"""

import tensorflow as tf

from alexnet_tf import lrn, precision
from alexnet_tf.config import LRNConfig

tf1 = tf.compat.v1

WEIGHTS = 'weights'
BIASES = 'biases'
# Batch normalisation (ModelConfig.normalization 'batch', not the paper's): Keras's constants,
# the ones the batch-norm ports of AlexNet trained with.
BATCH_NORM_DECAY = 0.99  # moving statistics average the last ~100 batches
BATCH_NORM_EPSILON = 1e-3


def _variables(weight_shape, num_outputs, stddev, bias_init, compute):
  """(weights, biases) as `compute` tensors, their variables in `precision.variable_dtype`."""
  dtype = precision.variable_dtype(compute)
  weights = tf1.get_variable(WEIGHTS, weight_shape, dtype=dtype,
                             initializer=tf1.random_normal_initializer(0.0, stddev))
  biases = tf1.get_variable(BIASES, [num_outputs], dtype=dtype,
                            initializer=tf1.constant_initializer(bias_init))
  return precision.read_variable(weights, compute), precision.read_variable(biases, compute)


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


def batch_norm(inputs, training, scope='batch_norm'):
  """Batch normalisation per channel: [batch, height, width, channels] -> the same shape.

  Learned scale `gamma` (1) and offset `beta` (0) are float32 whatever the input's dtype
  (the fused kernel takes them so). Training normalises with the batch's statistics and
  adds the update of `moving_mean` and `moving_variance` to the UPDATE_OPS collection (the
  model_fn runs them with every step); evaluation and serving use the moving statistics.
  """
  with tf1.variable_scope(scope):
    channels = int(inputs.shape[-1])
    gamma = tf1.get_variable('gamma', [channels], tf.float32, tf1.ones_initializer())
    beta = tf1.get_variable('beta', [channels], tf.float32, tf1.zeros_initializer())
    # MEAN: under a mirrored strategy each replica's update is averaged, as Keras's are.
    moving = [tf1.get_variable(name, [channels], tf.float32, init, trainable=False,
                               aggregation=tf.VariableAggregation.MEAN)
              for name, init in (('moving_mean', tf1.zeros_initializer()),
                                 ('moving_variance', tf1.ones_initializer()))]
    if not training:
      outputs, _, _ = tf1.nn.fused_batch_norm(inputs, gamma, beta, moving[0], moving[1],
                                              epsilon=BATCH_NORM_EPSILON, is_training=False)
      return outputs
    outputs, mean, variance = tf1.nn.fused_batch_norm(inputs, gamma, beta,
                                                      epsilon=BATCH_NORM_EPSILON)
    for variable, value in zip(moving, (mean, variance)):
      tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, tf1.assign_sub(
          variable, (variable - value) * (1 - BATCH_NORM_DECAY)))
    return outputs


def local_response_norm(inputs, config: LRNConfig, impl='reference', name='lrn'):
  """Local response normalisation across channels (paper section 3.3), built by the
  implementation `impl` of the registry `lrn.IMPLEMENTATIONS`.

  b[..., c] = a[..., c] / (bias + alpha * sum_{|c' - c| <= depth_radius} a[..., c']^2)^beta

  Args:
    inputs: [batch, height, width, channels] (any rank >= 1 with a known last dimension for
      the banded implementations).
    config: the constants; `alpha` multiplies the plain sum (TF convention).
    impl: one of `config.LRN_IMPLS` (see `alexnet_tf.lrn` for each): 'reference' (TF's op),
      'banded', 'banded_grad', 'fused' (a C++ kernel, float32 or bfloat16). Which one a
      model gets on this machine is `lrn.resolve`'s decision, made before the graph is
      built; `lrn.build` decides whether it computes in the input's dtype or in float32.
    name: op name.

  Returns:
    [batch, height, width, channels], same dtype.
  """
  return lrn.build(impl, inputs, config, name)


def dropout(inputs, rate, training, name='dropout'):
  """Inverted dropout when `training` (a Python bool) is true, the identity otherwise.

  Scaling kept units by 1 / (1 - rate) at training time is equivalent to the paper's
  "multiply the outputs by 0.5 at test time" and leaves the test graph untouched. The op
  seed comes from the graph-level seed, so a seeded graph drops the same units every time.
  """
  if not training or rate == 0.0:
    return inputs
  return tf.nn.dropout(inputs, rate=rate, name=name)
