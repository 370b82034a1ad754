"""Shared pieces of the benchmarks: machine facts, data, the bare training step,
analytic FLOP counts, timing helpers and the results table/JSON.

Every benchmark imports `alexnet_tf` before TensorFlow (it turns on TF's oneDNN kernels,
which halve the conv-gradient time on AVX2 CPUs), so does this module.

Data. ImageNet itself is not here; `imagenet_like_dataset` writes scikit-image's sample
photos (real photographs) as JPEGs into a class-folder tree, a few framings and flips of each,
repeated to the requested count, and converts the tree with the product's converter
(`alexnet_tf.convert.folder.convert`, resize=256: shorter side 256, central square, JPEG),
so the shards, mean image and colour statistics are exactly what a user's own data gives.
CIFAR-10 uses the real converted dataset when given (`--cifar-dir`), else the same photos at
32x32.
"""

import argparse
import contextlib
import dataclasses
import datetime
import shutil
import tempfile
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

# Runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# TF's C++ INFO/WARNING lines (soft-placement colocation dumps for the '/gpu:N' towers)
# would bury the tables; errors still show.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import alexnet_tf  # noqa: E402  (first: it sets TF_ENABLE_ONEDNN_OPTS before TF loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_tf import config as config_lib  # noqa: E402
from alexnet_tf import recipes  # noqa: E402
from alexnet_tf import records  # noqa: E402
from alexnet_tf.config import FULL, Config, ModelConfig  # noqa: E402

tf1 = tf.compat.v1

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
          'immunohistochemistry', 'retina', 'stereo_motorcycle', 'motorcycle_left')
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
# Where the development machine keeps the converted real CIFAR-10; elsewhere pass --cifar-dir
# (or set ALEXNET_CIFAR_DIR), else the CIFAR-10 net reads the photos at 32x32.
DEFAULT_CIFAR_DIR = os.environ.get('ALEXNET_CIFAR_DIR', '/work/data/cifar10')


# ------------------------------------------------------------------------------------------
# Command line and the per-net loop shared by bench_train, bench_serving and bench_eval


def add_common_args(parser: argparse.ArgumentParser) -> None:
  """The options every per-net benchmark takes: nets, data, isolation, output, smoke."""
  parser.add_argument('--nets', default='imagenet,cifar10', help='comma-separated subset')
  parser.add_argument('--images', type=int, default=4000,
                      help='sample-photo images to convert (ImageNet-sized dataset)')
  parser.add_argument('--imagenet-classes', type=int, default=1000,
                      help='classes of the ImageNet-sized dataset (fc8 outputs)')
  parser.add_argument('--cifar-dir', default=DEFAULT_CIFAR_DIR,
                      help='converted CIFAR-10 (real images); photos at 32x32 when absent')
  parser.add_argument('--work-dir', help='keep datasets here (reused); default: a temp dir')
  parser.add_argument('--no-isolate', action='store_true',
                      help='measure in this process (peak memory is then cumulative)')
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, runs in seconds')
  parser.add_argument('--precisions', default='fp32,bf16',
                      help='compute precisions to compare (the first is the baseline); one '
                      'this machine has no hardware for is reported as not measurable')
  parser.add_argument('--allow-emulated', action='store_true',
                      help='measure such precisions anyway, on TF\'s generic kernels (for '
                      'checking that the benchmark runs: the figures mean nothing)')


def apply_common_smoke(args: argparse.Namespace) -> None:
  """--smoke: a 40-image, 10-class photo dataset measured in this process."""
  args.images, args.imagenet_classes, args.no_isolate, args.cifar_dir = 40, 10, True, None


def new_results(benchmark: str, args: argparse.Namespace, **extra) -> Dict[str, object]:
  """The JSON skeleton: benchmark name, machine, every setting but --json, `extra`."""
  return {'benchmark': benchmark, 'machine': machine_info(),
          'settings': {k: v for k, v in vars(args).items() if k != 'json'}, **extra}


@contextlib.contextmanager
def work_directory(path: Optional[str], prefix: str) -> Iterator[str]:
  """`path` (created, kept for reuse), or a temporary directory removed afterwards."""
  if path:
    os.makedirs(path, exist_ok=True)
    yield path
    return
  path = tempfile.mkdtemp(prefix=prefix)
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def run_nets(args: argparse.Namespace, prefix: str,
             measure: Callable[..., Dict[str, object]], *measure_args) -> Dict[str, object]:
  """{net: measure(net, data_dir, work_dir, *measure_args)} for each of --nets.

  The dataset of each net (`dataset_for`) is made in the work directory (--work-dir or a
  temporary one) and described in the result's 'data'.
  """
  results = {}
  with work_directory(args.work_dir, prefix) as work_dir:
    for net in args.nets.split(','):
      data_dir = dataset_for(net, work_dir, args.images, args.cifar_dir, args.imagenet_classes)
      results[net] = measure(net, data_dir, work_dir, *measure_args)
      results[net]['data'] = describe_data(data_dir)
  return results


def measurable_precisions(args: argparse.Namespace, tower_devices: Sequence[str]):
  """(the --precisions this machine can measure, {precision: why not} for the others,
  {precision: why its figures are not the hardware's} for those measured only emulated).

  A precision is measurable where `precision.choose` gives it for these towers: bf16 needs
  bf16 matrix units (or --allow-emulated, whose figures are not the hardware's).
  """
  from alexnet_tf import precision  # pylint: disable=import-outside-toplevel
  requested = [p for p in args.precisions.split(',') if p]
  unknown = [p for p in requested if p not in config_lib.PRECISIONS]
  if unknown or not requested:
    raise SystemExit(f'--precisions {args.precisions!r}: choose from {config_lib.PRECISIONS}')
  hardware = precision.detect(tower_devices)
  measurable, skipped, emulated = [], {}, {}
  for name in requested:
    try:
      choice = precision.choose(name, hardware, args.allow_emulated)
    except precision.PrecisionUnavailableError as e:
      skipped[name] = str(e)
      print(f'{name}: not measurable here: {e}', flush=True)
      continue
    measurable.append(name)
    if choice.reason.startswith('emulated'):
      emulated[name] = choice.reason
  if not measurable:
    raise SystemExit(f'none of --precisions {args.precisions} can be measured here')
  return measurable, skipped, emulated


def machine_line(results: Dict[str, object]) -> str:
  """'<cpu>, <n> cores, TF <version>, <date>': the first line of every report."""
  machine = results['machine']
  return (f'{machine["cpu"]}, {machine["cores"]} cores, TF {machine["tensorflow"]}, '
          f'{machine["date"]}')


# ------------------------------------------------------------------------------------------
# Machine and settings


def machine_info() -> Dict[str, object]:
  """CPU model, usable cores, ISA flags of interest, versions, date and TF's CPU knobs."""
  model, flags = platform.processor(), set()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name') and model in ('', platform.processor()):
          model = line.split(':', 1)[1].strip()
        elif line.startswith('flags') and not flags:
          flags = set(line.split(':', 1)[1].split())
  except OSError:
    pass
  try:
    with open('/proc/meminfo', encoding='utf-8') as f:
      mem_gib = int(f.readline().split()[1]) / 2**20
  except (OSError, ValueError, IndexError):
    mem_gib = None
  return {
      'host': platform.node(), 'cpu': model, 'cores': len(os.sched_getaffinity(0)),
      'isa': sorted(flags & {'avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                             'amx_tile', 'amx_bf16'}),
      'memory_gib': None if mem_gib is None else round(mem_gib, 1),
      'platform': platform.platform(), 'python': platform.python_version(),
      'tensorflow': tf.__version__, 'numpy': np.__version__,
      'alexnet_tf': alexnet_tf.__version__,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'tf_enable_onednn_opts': os.environ.get('TF_ENABLE_ONEDNN_OPTS', ''),
      'tf_cpu_allocator_use_bfc': os.environ.get('TF_CPU_ALLOCATOR_USE_BFC', ''),
  }


# The training step's cost does not depend on its rate. A small one keeps hundreds of steps
# on one repeated batch finite (the default's 0.02 peak, without its warm-up, diverges there).
BENCH_LEARNING_RATE = 0.001


def peak_rss_gib() -> float:
  """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def net_config(name: str, lrn_impl: Optional[str] = None, batch_size: Optional[int] = None,
               num_classes: Optional[int] = None, precision: Optional[str] = None) -> Config:
  """The product's config `name` ('imagenet' or 'cifar10') with benchmark overrides (and
  BENCH_LEARNING_RATE: the loops train sample photos, not a recipe)."""
  config = recipes.get_config(name)
  model = config.model
  if lrn_impl:
    model = dataclasses.replace(model, lrn_impl=lrn_impl)
  if precision:
    model = dataclasses.replace(model, precision=precision)
  if num_classes:
    model = dataclasses.replace(model, num_classes=num_classes)
  train = dataclasses.replace(config.train, learning_rate=BENCH_LEARNING_RATE)
  if batch_size:
    train = dataclasses.replace(train, batch_size=batch_size)
  return dataclasses.replace(config, model=model, train=train)


# ------------------------------------------------------------------------------------------
# Data


def sample_photos(names: Sequence[str] = PHOTOS) -> List[np.ndarray]:
  """scikit-image's RGB sample photographs (uint8 [h, w, 3]); ones it cannot load are skipped."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  photos = []
  for name in names:
    try:
      pixels = getattr(skimage.data, name)()
    except Exception:  # pylint: disable=broad-except
      continue  # absent in this version, or needs a download (no network)
    if isinstance(pixels, tuple):
      pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) >= 256:
      photos.append(np.ascontiguousarray(pixels))
  if not photos:
    raise RuntimeError('no scikit-image sample photos available')
  return photos


def _variants(photo: np.ndarray, count: int) -> List[np.ndarray]:
  """`count` distinct framings of a photo: flips and crops of 100%, 90% and 80%."""
  height, width = photo.shape[:2]
  out = []
  for i in range(count):
    zoom = (1.0, 0.9, 0.8)[(i // 2) % 3]
    shift = (i // 6) % 3 - 1  # left, centre, right
    h, w = int(height * zoom), int(width * zoom)
    top = (height - h) // 2
    left = (width - w) // 2 + shift * ((width - w) // 2)
    crop = photo[top:top + h, left:left + w]
    out.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
  return out


def write_photo_tree(root: str, num_images: int, num_classes: int = 10,
                     size: Optional[int] = None, shorter_side: int = 320) -> None:
  """<root>/<class>/<n>.jpg: `num_images` JPEGs of the sample photos (quality 95).

  Photo variants are repeated to reach `num_images`; image i goes to class i % num_classes.
  `size` stores them square at that side (for 32x32 trees); otherwise they keep their
  aspect ratio with the shorter side scaled to `shorter_side` (larger than the converter's
  256, so its resize still does real work). Each distinct variant is encoded once.
  """
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  encoded = []
  for photo in sample_photos():
    for variant in _variants(photo, 12):
      image = Image.fromarray(variant)
      if size:
        image = image.resize((size, size), Image.BICUBIC)
      else:
        scale = shorter_side / min(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                             Image.BICUBIC)
      buffer = io.BytesIO()
      image.save(buffer, format='JPEG', quality=95)
      encoded.append(buffer.getvalue())
  width = len(str(num_classes - 1))
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f'class{c:0{width}d}'), exist_ok=True)
  for i in range(num_images):
    name = os.path.join(root, f'class{i % num_classes:0{width}d}', f'{i:05d}.jpg')
    with open(name, 'wb') as f:
      f.write(encoded[i % len(encoded)])


def photo_dataset(work_dir: str, name: str, num_images: int, resize: int,
                  validation_fraction: float = 0.1, num_classes: int = 10) -> str:
  """A converted dataset of sample photos under work_dir/name (reused if already there).

  Returns the data directory (train and validation shards, dataset.json, mean_image.npy).
  """
  from alexnet_tf.convert import folder  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(work_dir, f'{name}-{num_images}')
  if os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
    return data_dir
  tree = os.path.join(work_dir, f'{name}-{num_images}-jpeg')
  write_photo_tree(tree, num_images, num_classes, size=None if resize >= 256 else resize)
  folder.convert(tree, data_dir, validation_fraction=validation_fraction, resize=resize,
                 workers=len(os.sched_getaffinity(0)), name=name, overwrite=True,
                 progress=False)
  return data_dir


def dataset_for(net: str, work_dir: str, num_images: int, cifar_dir: Optional[str],
                imagenet_classes: int = 1000) -> str:
  """The data directory a benchmark of `net` reads: real CIFAR-10 or converted photos.

  The ImageNet-sized photo dataset has `imagenet_classes` classes (1000: the paper's fc8),
  a quarter of every class held out for validation (1 of 4 images with 4 per class).
  """
  if net == 'cifar10':
    if cifar_dir and os.path.isfile(os.path.join(cifar_dir, records.METADATA_FILE)):
      return cifar_dir
    # The default place may be empty (photos then), but a directory given explicitly must hold
    # the data: silently measuring photos instead would mislabel the result.
    if cifar_dir and cifar_dir != DEFAULT_CIFAR_DIR:
      raise SystemExit(f'--cifar-dir {cifar_dir}: no {records.METADATA_FILE} (not a converted '
                       f'dataset)')
    # A quarter held out, so even the 4-images-per-class smoke set has a validation split
    # for the product loop's evaluation.
    return photo_dataset(work_dir, 'photos32', num_images, resize=32, validation_fraction=0.25)
  return photo_dataset(work_dir, f'photos256-{imagenet_classes}classes', num_images,
                       resize=256, validation_fraction=0.25, num_classes=imagenet_classes)


def describe_data(data_dir: str) -> Dict[str, object]:
  metadata = records.read_metadata(data_dir)
  return {'data_dir': os.path.abspath(data_dir), 'name': metadata.name,
          'counts': dict(metadata.counts), 'image_size': metadata.image_size,
          'num_classes': metadata.num_classes}


# ------------------------------------------------------------------------------------------
# FLOPs


def layer_flops(model: ModelConfig) -> List[Dict[str, object]]:
  """Multiply-adds of every conv and fully connected layer for one image, forward.

  Per layer: output positions x output channels (all towers) x inputs per output, where a
  FULL layer reads every tower's channels and an OWN layer only its tower's (the two-tower
  grouping halves conv2, conv4 and conv5). LRN, ReLU, pooling, softmax and the optimizer are
  not counted (< 1% of the total). Returns [{'name', 'macs', 'output'}] in order.
  """
  rows = []
  size, channels = model.image_size, 3
  towers = model.num_towers
  for layer in model.conv_layers:
    reads = channels if layer.reads == FULL else channels // towers
    if layer.padding == 'VALID':
      out = (size - layer.kernel) // layer.stride + 1
    else:
      out = -(-size // layer.stride)
    rows.append({'name': layer.name, 'output': [out, out, layer.filters],
                 'macs': out * out * layer.filters * layer.kernel ** 2 * reads})
    size, channels = out, layer.filters
    if layer.pool:
      if model.pool_padding == 'VALID':
        size = (size - model.pool_size) // model.pool_stride + 1
      else:
        size = -(-size // model.pool_stride)
  inputs = size * size * channels
  for layer in model.dense_layers:
    rows.append({'name': layer.name, 'output': [layer.units], 'macs': inputs * layer.units})
    inputs = layer.units
  rows.append({'name': model.logits_name, 'output': [model.num_classes],
               'macs': inputs * model.num_classes})
  return rows


def flops_per_image(model: ModelConfig) -> Dict[str, float]:
  """Forward and training FLOPs (2 per multiply-add) of one image.

  Training = forward + the weight gradients (as many multiply-adds as the forward) + the
  input gradients of every layer but the first (its input is the image, which TF does not
  differentiate): 3x forward minus conv1's share.
  """
  rows = layer_flops(model)
  forward = 2.0 * sum(r['macs'] for r in rows)
  return {'forward': forward, 'train': 3.0 * forward - 2.0 * rows[0]['macs']}


# ------------------------------------------------------------------------------------------
# The bare training step


def bare_train_graph(config: Config, batch_size: int, seed: int = 0):
  """The product's TRAIN graph (model_fn: net, loss, weight decay, momentum) on a batch held
  in memory: no input pipeline, hooks, summaries or checkpoints.

  Returns (graph, train_op, init_feed): run `tf1.global_variables_initializer()` and
  `tf1.local_variables_initializer()` with `init_feed` (it fills the in-memory batch).
  """
  from alexnet_tf import schedule  # pylint: disable=import-outside-toplevel
  from alexnet_tf.model_fn import make_model_fn  # pylint: disable=import-outside-toplevel
  model = config.model
  size = model.image_size
  rng = np.random.default_rng(seed)
  images = rng.normal(0.0, 60.0, size=(batch_size, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, model.num_classes, size=batch_size).astype(np.int32)
  graph = tf.Graph()
  with graph.as_default():
    tf1.set_random_seed(seed)
    feed_images = tf1.placeholder(tf.float32, images.shape)
    # A local variable: the batch lives in memory, the graph does not embed 79 MB constants.
    batch = tf1.get_local_variable('benchmark_images', initializer=feed_images,
                                   trainable=False)
    model_fn = make_model_fn(model, config.train, schedule.constant(config.train.learning_rate),
                             image_summaries=0)
    spec = model_fn({'image': batch}, tf.constant(labels), tf.estimator.ModeKeys.TRAIN)
  return graph, spec.train_op, {feed_images: images}


def time_bare_steps(config: Config, batch_size: int, warmup: int, steps: int,
                    seed: int = 0) -> Dict[str, object]:
  """Images/second of the bare training step: `warmup` steps, then `steps` timed ones."""
  from alexnet_tf import estimator as estimator_lib  # pylint: disable=import-outside-toplevel
  start = time.time()
  graph, train_op, init_feed = bare_train_graph(config, batch_size, seed)
  session_config = estimator_lib.session_config(config.model)
  with graph.as_default(), tf1.Session(config=session_config) as sess:
    sess.run([tf1.global_variables_initializer(), tf1.local_variables_initializer()],
             init_feed)
    for _ in range(warmup):
      sess.run(train_op)
    setup = time.time() - start
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      sess.run(train_op)
      times.append(time.perf_counter() - t)
  total = sum(times)
  return {'images_per_sec': steps * batch_size / total,
          'step_seconds_median': statistics.median(times), 'steps': steps,
          'warmup_steps': warmup, 'batch_size': batch_size, 'setup_seconds': setup,
          'lrn_impl': config.model.lrn_impl, 'precision': config.model.precision}


def make_checkpoint(config: Config, data_dir: str, model_dir: str, batch_size: int = 2):
  """A checkpoint of freshly initialised weights after one SGD step, by the product's
  Estimator (`estimator.make_estimator`) on a random in-memory batch.

  Returns (estimator, metadata): the estimator over `model_dir` (no training schedule).
  """
  # pylint: disable=import-outside-toplevel
  from alexnet_tf import estimator as estimator_lib
  from alexnet_tf import schedule
  metadata = records.read_metadata(data_dir)
  size = config.model.image_size
  trainer = estimator_lib.make_estimator(config, metadata, model_dir,
                                         schedule.constant(config.train.learning_rate), seed=0,
                                         save_every=1)

  def input_fn():
    images = tf.random.normal([batch_size, size, size, 3], stddev=60.0, seed=0)
    labels = tf.zeros([batch_size], tf.int32)
    return tf.data.Dataset.from_tensors(({'image': images}, labels)).repeat()

  trainer.train(input_fn, max_steps=1)
  return estimator_lib.make_estimator(config, metadata, model_dir), metadata


# ------------------------------------------------------------------------------------------
# Timing of Estimator loops


class StepTimer(tf1.train.SessionRunHook):
  """Records wall-clock time after every session run of a training or evaluation loop.

  `rate(first, last, per_step)` is the items/second between the end of run `first` and the
  end of run `last` (1-based), excluding graph building, session creation and warm-up.
  """

  def __init__(self):
    self.times: List[float] = []
    self.started: Optional[float] = None

  def after_create_session(self, session, coord):
    self.started = time.perf_counter()

  def after_run(self, run_context, run_values):
    self.times.append(time.perf_counter())

  def rate(self, first: int, last: int, per_step: float) -> float:
    if last <= first or last > len(self.times):
      raise ValueError(f'{len(self.times)} runs recorded, cannot time runs {first}..{last}')
    return (last - first) * per_step / (self.times[last - 1] - self.times[first - 1])


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> List[float]:
  """Wall-clock seconds of `repeats` calls of fn after `warmup` untimed calls."""
  return time_interleaved({'fn': fn}, warmup, repeats)['fn']


def time_interleaved(fns: Dict[str, Callable[[], object]], warmup: int,
                     repeats: int) -> Dict[str, List[float]]:
  """Like `time_calls` for several functions, called in turn (a, b, c, a, b, c, ...).

  Latencies a few milliseconds long drift with the machine's load from one second to the
  next; interleaving gives every function the same conditions, so their ratio is not the
  ratio of two different moments.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def gemm_flops(n: int = 4096, repeats: int = 5) -> Dict[str, float]:
  """Measured fp32 GEMM FLOP/s: an n x n by n x n matmul (2 n^3 FLOPs), best of `repeats`.

  Run in a graph session with the same threading as training (all cores); the best run is
  the machine's attainable peak for dense fp32 compute.
  """
  rng = np.random.default_rng(0)
  with tf.Graph().as_default():
    a = tf.Variable(rng.standard_normal((n, n), dtype=np.float32))
    b = tf.Variable(rng.standard_normal((n, n), dtype=np.float32))
    product = tf.reduce_sum(tf.matmul(a, b))  # one float fetched, the matmul is timed
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      times = time_calls(lambda: sess.run(product), warmup=1, repeats=repeats)
  best = min(times)
  return {'n': n, 'seconds_best': best, 'seconds_median': statistics.median(times),
          'flops_per_sec': 2.0 * n ** 3 / best,
          'flops_per_sec_median': 2.0 * n ** 3 / statistics.median(times)}


# ------------------------------------------------------------------------------------------
# Isolation and output


def run_isolated(fn: Callable[..., Dict[str, object]], *args, **kwargs) -> Dict[str, object]:
  """fn(*args, **kwargs) in a fresh spawned process; its result plus 'peak_rss_gib'.

  Each measurement gets its own TensorFlow runtime (thread pools, allocator, caches) and its
  own peak-memory figure, and one measurement's memory cannot inflate the next one's.
  """
  import multiprocessing  # pylint: disable=import-outside-toplevel
  context = multiprocessing.get_context('spawn')
  queue = context.Queue()
  process = context.Process(target=_isolated_main, args=(queue, fn, args, kwargs))
  process.start()
  while True:
    try:
      result = queue.get(timeout=1.0)
      break
    except Exception:  # pylint: disable=broad-except  (queue.Empty)
      if not process.is_alive():
        result = {'error': f'the subprocess died with exit code {process.exitcode}'}
        break
  process.join()
  if 'error' in result:
    raise RuntimeError(f'{fn.__name__} failed in its subprocess:\n{result["error"]}')
  return result


def _isolated_main(queue, fn, args, kwargs):
  import traceback  # pylint: disable=import-outside-toplevel
  try:
    result = dict(fn(*args, **kwargs))
    result['peak_rss_gib'] = peak_rss_gib()
  except BaseException:  # pylint: disable=broad-except
    result = {'error': traceback.format_exc()}
  queue.put(result)


def call(fn, isolate: bool, *args, **kwargs) -> Dict[str, object]:
  """run_isolated when `isolate`, else a plain call (smoke mode: no process start-up)."""
  if isolate:
    return run_isolated(fn, *args, **kwargs)
  result = dict(fn(*args, **kwargs))
  result['peak_rss_gib'] = peak_rss_gib()
  return result


def write_json(path: Optional[str], results: Dict[str, object]) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2, default=_jsonable)
    f.write('\n')
  print(f'wrote {path}')


def _jsonable(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f'not JSON serialisable: {type(value)}')


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
  """A plain-text table with right-aligned columns (the first left-aligned)."""
  cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  for n, row in enumerate(cells):
    print('  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))))
    if n == 0:
      print('  '.join('-' * w for w in widths))


def _cell(value) -> str:
  if isinstance(value, float):
    return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
  return str(value)
