"""C++ kernels, compiled at first use with TensorFlow's own compile and link flags.

`lrn` is the fused LRN (lrn_kernels.cc), the builder of `alexnet_tf.lrn`'s 'fused' entry.
Building once takes 10-30 s with g++; the library is cached under $ALEXNET_TF_KERNEL_CACHE
(default ~/.cache/alexnet_tf/kernels), keyed by the source, the TensorFlow version, the
flags and the CPU, so a new TF or a changed kernel rebuilds and nothing stale is loaded.
The compiler is $CXX, default g++.

The ops exist only in processes that loaded the library: graphs that leave the process
(SavedModels for TF Serving) are built with a plain-op LRN instead, and nothing builds or
loads the library for them (`alexnet_tf.lrn.resolve`).
"""

import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name('lrn_kernels.cc')
CACHE_ENV = 'ALEXNET_TF_KERNEL_CACHE'
COMPILER_ENV = 'CXX'
DEFAULT_CACHE = Path('~/.cache/alexnet_tf/kernels')
# -march=native: the library is built on the machine that runs it (AVX2/FMA for the window
# sums and square roots here); -fno-math-errno lets sqrt vectorise.
OPTIMISATION_FLAGS = ('-O3', '-march=native', '-fno-math-errno')
LRN_ATTRS = ('depth_radius', 'bias', 'alpha', 'beta')

_lock = threading.Lock()
_library = None
_failure = None  # the KernelBuildError of this process's one attempt, raised again after it


class KernelBuildError(RuntimeError):
  """The C++ kernels could not be compiled or loaded."""


def compile_command(source: Path, output: Path, compiler: str):
  """The compiler's argv: a shared library against this process's TensorFlow."""
  return [compiler, '-shared', '-fPIC', *OPTIMISATION_FLAGS, *tf.sysconfig.get_compile_flags(),
          str(source), '-o', str(output), *tf.sysconfig.get_link_flags()]


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      return next((line for line in f if line.startswith('model name')), platform.machine())
  except OSError:
    return platform.machine()


def library_path(cache_dir=None, compiler=None) -> Path:
  """Path of the compiled kernel library, building it first if the cache has none.

  Raises:
    KernelBuildError: no compiler, a failed compile, or an unwritable cache directory; the
      message names the command and the compiler's last output lines.
  """
  compiler = compiler or os.environ.get(COMPILER_ENV, 'g++')
  cache = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), tf.__version__.encode(),
               ' '.join(compile_command(SOURCE, Path('out'), compiler)).encode(),
               _cpu_model().encode()):
    key.update(part)
  path = cache / f'alexnet_tf_kernels_{key.hexdigest()[:16]}.so'
  if path.is_file():
    return path
  try:
    cache.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise KernelBuildError(f'cannot create the kernel cache {cache} ({e}); set {CACHE_ENV} '
                           f'to a writable directory') from e
  # Compile to a temporary name and rename: a concurrent or killed build never leaves a
  # half-written library under the final name.
  fd, tmp = tempfile.mkstemp(suffix='.so.tmp', dir=cache)
  os.close(fd)
  command = compile_command(SOURCE, Path(tmp), compiler)
  log.info('building the fused LRN kernel once (10-30 s): %s', shlex.join(command))
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
  except FileNotFoundError as e:
    os.unlink(tmp)
    raise KernelBuildError(
        f'no C++ compiler {compiler!r} to build {SOURCE.name} for the "fused" LRN; install '
        f'g++ (or set {COMPILER_ENV}), or choose another LRN (--lrn-impl banded_grad)') from e
  if result.returncode != 0:
    os.unlink(tmp)
    tail = '\n'.join((result.stderr or result.stdout).strip().splitlines()[-15:])
    raise KernelBuildError(f'compiling {SOURCE} failed (exit {result.returncode}):\n'
                           f'{shlex.join(command)}\n{tail}')
  os.replace(tmp, path)
  return path


def _lrn_gradient(op, grad):
  attrs = {name: op.get_attr(name) for name in LRN_ATTRS}
  return _library.alexnet_lrn_grad(grad, op.inputs[0], op.outputs[0], **attrs)


def load():
  """The loaded kernel library (its Python op wrappers), built if needed; once per process."""
  global _library, _failure  # pylint: disable=global-statement
  with _lock:
    if _failure is not None:
      raise _failure  # a failed build is not retried (it may take as long as a build)
    if _library is None:
      try:
        path = library_path()
        try:
          library = tf.load_op_library(str(path))
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
          raise KernelBuildError(f'loading {path} failed: {e.message}; delete it to rebuild'
                                 ) from e
      except KernelBuildError as e:
        _failure = e
        raise
      tf.RegisterGradient('AlexnetLrn')(_lrn_gradient)
      _library = library
  return _library


def load_error():
  """None if the kernel library builds and loads in this process, else why not (a str)."""
  try:
    load()
  except KernelBuildError as e:
    return str(e)
  return None


DTYPES = (tf.float32, tf.bfloat16)  # what the kernels read and write (they compute in float32)


def lrn(inputs: tf.Tensor, depth_radius: int, bias: float, alpha: float, beta: float,
        name: str = 'lrn') -> tf.Tensor:
  """Fused LRN across the last dimension: [..., C] float32 or bfloat16 -> the same shape
  and dtype (bfloat16 is computed in float32 and rounded once, on the way out).

  The same function as `tf.nn.local_response_normalization` (alpha multiplies the plain
  window sum), with its gradient from the fused `AlexnetLrnGrad` kernel.
  """
  if inputs.dtype not in DTYPES:
    raise ValueError(f'{name}: the fused LRN kernel takes float32 or bfloat16, got '
                     f'{inputs.dtype.name}')
  return load().alexnet_lrn(inputs, depth_radius=depth_radius, bias=bias, alpha=alpha,
                            beta=beta, name=name)
