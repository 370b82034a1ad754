"""Local response normalisation (paper section 3.3): every implementation, and which one a
graph gets.

b[..., c] = a[..., c] / (bias + alpha * sum_{|c' - c| <= depth_radius} a[..., c']^2)^beta

`IMPLEMENTATIONS` is the one registry: for each name its builder, its portable equivalent
(what graphs that leave the process get) and where it can run. `resolve` is the one policy:

  purpose EXPORT (SavedModels, PREDICT graphs)  -> the portable equivalent: TF Serving has no
                                                   op of our kernel library
  purpose IN_PROCESS (training and evaluation)  -> the requested one, unless it cannot run
      well here: a CPU-only kernel with towers on GPUs gets its portable equivalent (plain
      ops, which run on the GPU); a kernel that cannot be built (no compiler) gets it too,
      with a warning. The equivalents compute the same function, so the same checkpoints
      train, evaluate, resume and export.

In mixed-precision graphs (`alexnet_tf.precision`) an implementation computes in the graph's
dtype when it is one of its `dtypes`; otherwise `build` runs it in float32 between two casts.
bf16: 'fused' reads and writes bf16 (and computes in float32 inside), the banded forms are
plain bf16 ops, TF's op ('reference') has no bf16 CPU kernel and gets the casts. fp16: all get
the casts (a square of an activation over 256 overflows fp16).

`config.LRN_IMPLS` lists the same names for `ModelConfig` validation (config imports no
TensorFlow); tests/test_lrn_impls.py checks that the two agree.
"""

import dataclasses
import logging
from typing import Callable, Sequence, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import kernels
from alexnet_tf.config import LRNConfig

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

IN_PROCESS = 'in_process'  # graphs this process runs: training, evaluation
EXPORT = 'export'  # graphs that leave the process: SavedModels (PREDICT)
PURPOSES = (IN_PROCESS, EXPORT)

Builder = Callable[[tf.Tensor, LRNConfig, str], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One LRN implementation: `build(inputs, config, name)` and where it runs."""
  build: Builder
  portable: str  # the implementation exported graphs get (itself when made of plain TF ops)
  cpu_only: bool = False  # its kernels exist for the CPU only
  needs_kernel: bool = False  # needs alexnet_tf.kernels' library, compiled at first use
  dtypes: Tuple[tf.DType, ...] = (tf.float32,)  # computed as they are; others: float32 casts


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


def reference_lrn(inputs, config: LRNConfig, name='lrn'):
  """`tf.nn.local_response_normalization` and TF's `LRNGrad`."""
  return tf.nn.local_response_normalization(
      inputs, depth_radius=config.depth_radius, bias=config.bias, alpha=config.alpha,
      beta=config.beta, name=name)


def banded_lrn(inputs, config: LRNConfig, name='lrn'):
  """The windowed sum of squares as a matrix product with a 0/1 band matrix (the GEMM
  kernels), gradient by automatic differentiation. [..., C] -> the same shape."""
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


def fused_lrn(inputs, config: LRNConfig, name='lrn'):
  """The closed form of `banded_grad_lrn` as two C++ kernels, one pass over memory each way
  (`alexnet_tf.kernels`, compiled at first use); float32 or bfloat16."""
  return kernels.lrn(inputs, config.depth_radius, config.bias, config.alpha, config.beta,
                     name=name)


_FLOAT_AND_BF16 = (tf.float32, tf.bfloat16)
IMPLEMENTATIONS = {
    'reference': Implementation(reference_lrn, portable='reference'),
    'banded': Implementation(banded_lrn, portable='banded', dtypes=_FLOAT_AND_BF16),
    # The fastest made of TF ops.
    'banded_grad': Implementation(banded_grad_lrn, portable='banded_grad',
                                  dtypes=_FLOAT_AND_BF16),
    # The fastest: its exported graphs get the plain-op form of the same closed form.
    'fused': Implementation(fused_lrn, portable='banded_grad', cpu_only=True, needs_kernel=True,
                            dtypes=kernels.DTYPES),
}


def implementation(impl: str) -> Implementation:
  """The registry entry of `impl`; ValueError naming the valid ones."""
  try:
    return IMPLEMENTATIONS[impl]
  except KeyError:
    raise ValueError(f'unknown LRN implementation {impl!r}; use one of '
                     f'{tuple(IMPLEMENTATIONS)}') from None


def build(impl: str, inputs: tf.Tensor, config: LRNConfig, name: str = 'lrn') -> tf.Tensor:
  """The LRN `impl` of `inputs` [..., C], in their dtype if `impl` computes in it, else (bf16
  and fp16) in float32 between casts (see the module docstring); the result has the dtype
  of `inputs`."""
  spec = implementation(impl)
  if inputs.dtype in spec.dtypes or inputs.dtype not in (tf.bfloat16, tf.float16):
    return spec.build(inputs, config, name)  # float64 too, where an implementation takes it
  widened = spec.build(tf.cast(inputs, tf.float32), config, name)
  return tf.cast(widened, inputs.dtype, name=f'{name}_{inputs.dtype.name}')


def resolve(impl: str, purpose: str, tower_devices: Sequence[str] = ()) -> str:
  """The implementation a graph built for `purpose` gets when `impl` is asked for.

  Args:
    impl: the configured implementation (`ModelConfig.lrn_impl`).
    purpose: IN_PROCESS (this process runs the graph) or EXPORT (it leaves the process).
    tower_devices: the devices the towers are placed on (IN_PROCESS only).

  Returns:
    `impl` or its portable equivalent (see the module docstring). Only IN_PROCESS with an
    implementation that needs the kernel library builds and loads it; EXPORT never does.
  """
  spec = implementation(impl)
  if purpose == EXPORT:
    return spec.portable
  if purpose != IN_PROCESS:
    raise ValueError(f'unknown purpose {purpose!r}; use one of {PURPOSES}')
  if spec.cpu_only and tf.config.list_physical_devices('GPU') and any(
      'gpu' in d.lower() for d in tower_devices):
    log.info('towers on %s: LRN %r (plain TF ops, which run on the GPU) instead of the '
             'CPU-only %r', ', '.join(tower_devices), spec.portable, impl)
    return spec.portable
  if spec.needs_kernel:
    problem = kernels.load_error()
    if problem is not None:
      log.warning('LRN %r is not available here, using %r (the same function, slower): %s',
                  impl, spec.portable, problem)
      return spec.portable
  return impl
