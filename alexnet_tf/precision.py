"""Mixed precision: which compute precision a run gets, and the dtypes behind the names.

The mechanism is an explicit mixed-precision graph, built by the model itself
(`model.build_alexnet`, `layers`): the variables are float32 and are cast to the compute
dtype where a layer reads them; the convolutions, matrix products, ReLUs, LRNs, pooling and
dropout run in that dtype; the logits are cast back to float32, so the softmax, the
cross-entropy, the weight decay (over the float32 variables), the gradients that reach the
optimiser and the metrics stay float32. Checkpoints hold float32 variables whatever the run's
precision, so a run can resume, evaluate or export in another one.

Why not grappler's `auto_mixed_precision_onednn_bfloat16` rewrite (what the issue measured):
it exists only for oneDNN CPUs, it cannot be asked to keep the product's own LRN kernel in
bf16 (it casts around ops it does not know), and the graph it runs is not the graph the
tests can see. The explicit graph is the same on any CPU or GPU, so it is tested here on a
CPU without bf16 instructions (TF's generic kernels: correct, slow), and on GPUs the same code
gives fp16 with dynamic loss scaling (`loss_scaled`).

`choose` is the one policy, a pure function of the hardware (`Hardware`, read by `detect`):

  requested  towers on GPUs (all capability >= 8.0)  other GPUs          a CPU
  auto       bf16                                    fp16 (loss scaling)  bf16 if it has
                                                                          avx512_bf16 or
                                                                          amx_bf16, else fp32
  bf16       bf16                                    refused              bf16 / refused
  fp16       fp16                                    fp16                 refused
  fp32       fp32                                    fp32                 fp32

"refused" raises `PrecisionUnavailableError` naming what the hardware lacks, unless
`allow_emulated` (tests, correctness checks): then TF's generic kernels run it, slowly.
"""

import dataclasses
import logging
from typing import FrozenSet, Sequence, Tuple

import tensorflow as tf

from alexnet_tf.config import BF16, FP16, FP32, PRECISIONS, Config

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

AUTO = 'auto'
REQUESTS = (AUTO,) + PRECISIONS  # the --precision choices
# /proc/cpuinfo flags of the CPU instructions oneDNN uses for bf16 matrix products: AVX-512
# BF16 (Cooper Lake, Zen 4) and AMX (Sapphire Rapids and later).
CPU_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
BF16_GPU_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores
DTYPES = {FP32: tf.float32, BF16: tf.bfloat16, FP16: tf.float16}
CPUINFO = '/proc/cpuinfo'


class PrecisionUnavailableError(ValueError):
  """The requested precision needs hardware this machine does not have."""


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What the precision depends on.

  cpu_flags: the CPU's feature flags (as /proc/cpuinfo spells them).
  gpu_capabilities: (major, minor) compute capability of each GPU the towers are placed on;
    empty when they run on the CPU.
  """
  cpu_flags: FrozenSet[str] = frozenset()
  gpu_capabilities: Tuple[Tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Choice:
  precision: str  # one of config.PRECISIONS
  reason: str  # for the log line at start: why this precision on this machine


def cpu_flags(path: str = CPUINFO) -> FrozenSet[str]:
  """The first CPU's flags from /proc/cpuinfo; empty where there is none (not Linux)."""
  try:
    with open(path, encoding='utf-8') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def detect(tower_devices: Sequence[str]) -> Hardware:
  """The hardware of this process for towers on `tower_devices` ('/gpu:1', '/cpu:0', ...).

  A tower asks for a GPU that exists: that GPU's compute capability counts. Towers on GPUs
  that do not exist run on the CPU (soft placement), so then the CPU's flags decide.
  """
  gpus = tf.config.list_physical_devices('GPU')
  capabilities = []
  for device in tower_devices:
    spec = tf.DeviceSpec.from_string(device)
    index = spec.device_index or 0
    if (spec.device_type or '').upper() == 'GPU' and index < len(gpus):
      details = tf.config.experimental.get_device_details(gpus[index])
      capabilities.append(tuple(details.get('compute_capability', (0, 0))))
  return Hardware(cpu_flags(), tuple(capabilities))


def choose(requested: str, hardware: Hardware, allow_emulated: bool = False) -> Choice:
  """The precision a run gets when `requested` (one of REQUESTS) is asked for (see the table
  in the module docstring).

  Raises:
    PrecisionUnavailableError: `requested` needs what `hardware` lacks, and not
      `allow_emulated`; the message says what is missing and what to use instead.
    ValueError: an unknown request.
  """
  if requested not in REQUESTS:
    raise ValueError(f'unknown precision {requested!r}; use one of {REQUESTS}')
  if requested == FP32:
    return Choice(FP32, 'requested')
  if hardware.gpu_capabilities:
    return _choose_on_gpus(requested, hardware.gpu_capabilities, allow_emulated)
  return _choose_on_cpu(requested, hardware.cpu_flags, allow_emulated)


def _choose_on_gpus(requested, capabilities, allow_emulated):
  shown = ', '.join(f'{major}.{minor}' for major, minor in capabilities)
  bf16_ready = all(tuple(c) >= BF16_GPU_CAPABILITY for c in capabilities)
  if requested == FP16:
    return Choice(FP16, f'requested (GPU compute capability {shown}; dynamic loss scaling)')
  if bf16_ready:
    return Choice(BF16, f'GPU compute capability {shown} has bf16 tensor cores')
  if requested == AUTO:
    return Choice(FP16, f'GPU compute capability {shown} < 8.0 has no bf16 tensor cores: '
                        f'fp16 with dynamic loss scaling')
  return _refused_or_emulated(
      BF16, f'bf16 needs GPUs of compute capability >= 8.0 (Ampere), these have {shown}; '
      f'use --precision fp16 or auto', allow_emulated)


def _choose_on_cpu(requested, flags, allow_emulated):
  present = [f for f in CPU_BF16_FLAGS if f in flags]
  if requested == FP16:
    return _refused_or_emulated(
        FP16, 'fp16 is for GPUs (with loss scaling): CPUs have no fp16 matrix units that '
        'TensorFlow uses; use --precision bf16, fp32 or auto', allow_emulated)
  if present:
    return Choice(BF16, f'this CPU has {" and ".join(present)}')
  missing = f'this CPU has neither {" nor ".join(CPU_BF16_FLAGS)} (no bf16 matrix support)'
  if requested == AUTO:
    return Choice(FP32, missing)
  return _refused_or_emulated(
      BF16, f'bf16 needs a CPU with {" or ".join(CPU_BF16_FLAGS)} or a GPU of compute '
      f'capability >= 8.0, and {missing}; use --precision fp32 or auto', allow_emulated)


def _refused_or_emulated(precision, problem, allow_emulated):
  if not allow_emulated:
    raise PrecisionUnavailableError(problem)
  return Choice(precision, f'emulated: TF\'s generic kernels, correct but slow ({problem})')


def evaluable_here(config: Config) -> Config:
  """`config` with the precision to evaluate its trained run in on this machine: the run's
  own where the hardware has it, else fp32 (the variables are float32 either way) rather than
  TF's slow emulation, so a bf16 run from a bf16 machine evaluates here at fp32's speed."""
  model = config.model
  try:
    choose(model.precision, detect(model.tower_devices[:model.num_towers]))
    return config
  except PrecisionUnavailableError as e:
    log.info('evaluating in fp32: the run trained in %s, but %s', model.precision, e)
    return dataclasses.replace(config, model=dataclasses.replace(model, precision=FP32))


def compute_dtype(precision: str) -> tf.DType:
  """The tf.DType of a precision name (config.PRECISIONS)."""
  return DTYPES[precision]


def variable_dtype(compute: tf.DType) -> tf.DType:
  """The dtype variables are kept in for inputs of dtype `compute`: float32 for the
  half-precision compute dtypes (mixed precision), the dtype itself otherwise."""
  return tf.float32 if compute in (tf.bfloat16, tf.float16) else compute


def read_variable(variable: tf.Variable, compute: tf.DType) -> tf.Tensor:
  """`variable` as a `compute` tensor: a cast where the two differ. The cast's gradient casts
  back, so the variable's gradient is float32."""
  return variable if variable.dtype.base_dtype == compute else tf.cast(variable, compute)


def loss_scaled(optimizer: tf1.train.Optimizer, precision: str) -> tf1.train.Optimizer:
  """fp16: `optimizer` with dynamic loss scaling (fp16 gradients underflow without it);
  bf16 has float32's exponent range and fp32 needs none: `optimizer` itself."""
  if precision != FP16:
    return optimizer
  return tf1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, loss_scale='dynamic')
