"""Throughput of the training input pipeline against the raw JPEG/PNG decode of the same bytes.

The target: the training input pipeline, as it feeds the Estimator
(`input_pipeline.make_input_fn(training=True)`), delivers >= 80% of the images per CPU second
of a plain `tf.io.decode_jpeg` over the same records with the same parallelism.

Datasets, written to a temporary directory as TFRecord shards with dataset.json and
mean_image.npy (the format of `alexnet_tf.records`):
  imagenet  scikit-image's sample photos resized to 400x350, then brought to 256x256 the way
            the converter does it (central square, bicubic), JPEG quality 95, repeated to
            --records examples; DataConfig of the 'imagenet' config (227 crops, pixel mean,
            flips, PCA lighting).
  cifar     --cifar-dir: converted CIFAR-10 shards; else --cifar-tar: the real CIFAR-10 JPEGs
            of cifar10-train-jpeg.tar.gz; else 32x32 crops of the sample photos as PNG (what
            the converter stores for the CIFAR-10 pickles). DataConfig of the 'cifar10' config
            (32 crops of the 4-padded image, decoded images cached).

What is measured, each over `--images` images after a warm-up (for cached datasets: one full
epoch, so the steady state is measured), alternating for --rounds rounds; tables show medians:
  raw decode        shards read as by the pipeline, full decode to uint8, batched.
  pipeline          what tf.data delivers to the Estimator, `TrainingPipeline.deferred`
                    (shuffled records; random window decoded - fused for JPEG - or, padded
                    images, cut per batch; mirrored; uint8 crops batched with their window,
                    flip and lighting alphas). Its ratio to raw decode is the target's figure.
  float in tf.data  `make_dataset`: the float finish mapped over the batches in tf.data, as
                    before the float work moved into the graph.
  in-graph finish   the float finish where make_input_fn puts it: one batch of the deferred
                    form held in variables, `TrainingPipeline.finish` run on it by
                    session.run in a loop (default session thread pools, as the Estimator's).
                    Without a GPU this work is not saved, only moved into the training step:
                    "pipeline + finish" is the combined CPU cost per image.
Rates are given per wall-clock second and per CPU second of the process (the per-core rate,
robust to other load on a shared machine); the ratios use the per-CPU-second rates.

The allocator matters: with glibc malloc every float32 batch of 128 x 227 x 227 x 3 (79 MB)
is fresh mmap-ed memory and page-faults on first touch; TF's own BFC allocator reuses it.
The JSON records which one ran:

  TF_CPU_ALLOCATOR_USE_BFC=true python benchmarks/bench_input_pipeline.py --json bfc.json

  python benchmarks/bench_input_pipeline.py --json /tmp/bench.json    # ~3 minutes
  python benchmarks/bench_input_pipeline.py --smoke                   # a few seconds
"""

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time

# Runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
# alexnet_tf first: it sets TF's CPU options (oneDNN) as the training process has them.
import alexnet_tf  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_tf import recipes  # noqa
from alexnet_tf import input_pipeline  # noqa: E402
from alexnet_tf import records  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
          'immunohistochemistry', 'retina', 'stereo_motorcycle')
TARGET_RATIO = 0.8


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--records', type=int, default=2000, help='examples per dataset')
  parser.add_argument('--images', type=int, default=3072,
                      help='images measured per run (after the warm-up)')
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=3, help='alternating raw/pipeline rounds')
  parser.add_argument('--datasets', default='imagenet,cifar', help='comma-separated subset')
  parser.add_argument('--cifar-dir', help='converted CIFAR-10 shards (train split) to read')
  parser.add_argument('--cifar-tar', help='cifar10-train-jpeg.tar.gz: real CIFAR-10 JPEGs')
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, runs in seconds')
  args = parser.parse_args(argv)
  # One line now, rather than a traceback from deep in the data writing later.
  if args.cifar_tar and not os.path.isfile(args.cifar_tar):
    raise SystemExit(f'bench_input_pipeline: --cifar-tar {args.cifar_tar}: no such file')
  if args.cifar_dir and not os.path.isfile(os.path.join(args.cifar_dir, records.METADATA_FILE)):
    raise SystemExit(f'bench_input_pipeline: --cifar-dir {args.cifar_dir}: no '
                     f'{records.METADATA_FILE} (not a converted dataset)')
  if args.smoke:
    args.records, args.images, args.batch_size, args.rounds = 64, 64, 16, 1
  return args


# ------------------------------------------------------------------------------------------
# Data


def sample_photos():
  """The RGB sample photos of scikit-image, resized to 400x350 (width x height), uint8."""
  photos = []
  for name in PHOTOS:
    try:
      pixels = getattr(skimage.data, name)()
    except Exception:  # pylint: disable=broad-except
      continue  # photos that need a download are skipped (no network)
    if isinstance(pixels, tuple):
      pixels = pixels[0]
    if pixels.ndim != 3 or pixels.shape[2] != 3:
      continue
    photos.append(np.asarray(Image.fromarray(pixels).resize((400, 350), Image.BICUBIC)))
  if not photos:
    raise RuntimeError('no scikit-image sample photos available')
  return photos


def converter_style(pixels: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to `size`, central square (as the converter stores images)."""
  image = Image.fromarray(pixels)
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) / 2, (height - side) / 2
  return np.asarray(image.resize((size, size), Image.BICUBIC,
                                 box=(left, top, left + side, top + side)))


def encode(pixels: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  if fmt == 'jpeg':
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=95)
  else:
    Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


def imagenet_images(count: int):
  """[(encoded JPEG, pixels)] of 256x256 images: 4 variants of each photo, repeated."""
  distinct = []
  for photo in sample_photos():
    for variant in range(4):
      pixels = photo[:, ::-1] if variant % 2 else photo
      if variant >= 2:  # a different framing: 10% zoom
        pixels = pixels[17:-18, 20:-20]
      stored = converter_style(np.ascontiguousarray(pixels), 256)
      distinct.append((encode(stored, 'jpeg'), stored))
  return [distinct[i % len(distinct)] for i in range(count)]


def cifar_images_from_photos(count: int):
  """[(encoded PNG, pixels)] of 32x32 crops of the sample photos (2x downscaled)."""
  rng = np.random.default_rng(0)
  photos = [p[::2, ::2] for p in sample_photos()]
  out = []
  for i in range(count):
    photo = photos[i % len(photos)]
    y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
    pixels = np.ascontiguousarray(photo[y:y + 32, x:x + 32])
    out.append((encode(pixels, 'png'), pixels))
  return out


def cifar_images_from_tar(path: str, count: int):
  """[(encoded JPEG, pixels)]: the first `count` JPEGs of the CIFAR-10 tarball, classes mixed."""
  per_class = {}
  with tarfile.open(path) as archive:
    for member in archive:
      parts = member.name.split('/')
      if member.isfile() and member.name.endswith('.jpg') and len(parts) == 4:
        taken = per_class.setdefault(parts[2], [])
        if len(taken) < count // 10 + 1:
          data = archive.extractfile(member).read()
          taken.append((data, np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))))
  images = [pair for group in zip(*per_class.values()) for pair in group]
  return images[:count]


def write_dataset(directory: str, images, num_shards: int, name: str) -> None:
  """Train shards of `images` [(encoded, pixels)] plus dataset.json and mean_image.npy."""
  os.makedirs(directory, exist_ok=True)
  writers = [tf.io.TFRecordWriter(os.path.join(directory, records.shard_name(
      records.TRAIN, i, num_shards))) for i in range(num_shards)]
  pixel_sum, outer_sum, count = np.zeros(3), np.zeros((3, 3)), 0
  image_sum = np.zeros(images[0][1].shape, np.float64)
  for index, (data, pixels) in enumerate(images):
    feature = {
        records.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        records.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 10])),
    }
    writers[index % num_shards].write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    flat = pixels.reshape(-1, 3).astype(np.float64)
    pixel_sum += flat.sum(0)
    outer_sum += flat.T @ flat
    count += len(flat)
    image_sum += pixels
  for writer in writers:
    writer.close()
  metadata = records.DatasetMetadata(
      name=name, classes=tuple(f'class{i}' for i in range(10)), counts={records.TRAIN: len(images)},
      num_shards={records.TRAIN: num_shards}, image_size=tuple(images[0][1].shape[:2]),
      color_stats=records.ColorStats.from_moments(pixel_sum, outer_sum, count),
      source='benchmarks/bench_input_pipeline.py')
  records.write_metadata(directory, metadata, (image_sum / len(images)).astype(np.float32))


# ------------------------------------------------------------------------------------------
# Measurement


def raw_decode_dataset(data_dir: str, data_config, batch_size: int):
  """Shards read as by the pipeline -> parse -> full decode (uint8) -> batch -> prefetch."""
  files = records.shard_files(data_dir, records.TRAIN)
  size = records.read_metadata(data_dir).image_size

  def decode(serialized):
    encoded, label = input_pipeline.parse_example(serialized)
    # The decoder of the stored format, as cheap as decoding gets.
    image = tf.cond(tf.io.is_jpeg(encoded), lambda: tf.io.decode_jpeg(encoded, channels=3),
                    lambda: tf.io.decode_png(encoded, channels=3))
    image.set_shape(list(size) + [3])
    return image, label

  dataset = tf.data.Dataset.from_tensor_slices(files).repeat()
  dataset = dataset.interleave(tf.data.TFRecordDataset,
                               cycle_length=min(data_config.cycle_length, len(files)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def uncached_pipeline_dataset(data_dir: str, data_config, batch_size: int):
  """The pipeline with cache_decoded off: every image decoded again (a first epoch)."""
  return pipeline_dataset(data_dir, dataclasses.replace(data_config, cache_decoded=False),
                          batch_size)


def training_pipeline(data_dir: str, data_config):
  source = input_pipeline.open_dataset(data_dir, data_config, training=True)
  return input_pipeline.TrainingPipeline(source, data_config, seed=None)


def pipeline_dataset(data_dir: str, data_config, batch_size: int):
  """What tf.data hands the Estimator (`make_input_fn`): uint8 crops and their choices."""
  return training_pipeline(data_dir, data_config).deferred(records.TRAIN, batch_size, None, True)


def float_pipeline_dataset(data_dir: str, data_config, batch_size: int):
  """`make_dataset`'s float32 batches: the float finish inside tf.data."""
  source = input_pipeline.open_dataset(data_dir, data_config, training=True)
  return input_pipeline.make_dataset(source, records.TRAIN, data_config, batch_size,
                                     training=True)


def measure_graph_finish(data_dir: str, data_config, batch_size: int, num_images: int):
  """(images per wall second, images per CPU second) of the in-graph float stage.

  One batch of the deferred form is held in variables (constants would be folded away by
  the graph optimiser), and `TrainingPipeline.finish` on it is run as session.run targets.
  """
  features, _ = next(iter(pipeline_dataset(data_dir, data_config, batch_size)))
  tf1 = tf.compat.v1
  with tf.Graph().as_default():
    feeds, held = {}, {}
    for key, value in features.items():
      placeholder = tf1.placeholder(value.dtype, value.shape)
      held[key] = tf1.Variable(placeholder, trainable=False)
      feeds[placeholder] = value.numpy()
    finish = training_pipeline(data_dir, data_config).finish(held)['image'].op
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer(), feeds)
      for _ in range(2):
        session.run(finish)
      runs = max(1, num_images // batch_size)
      wall, cpu = time.perf_counter(), time.process_time()
      for _ in range(runs):
        session.run(finish)
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return runs * batch_size / wall, runs * batch_size / cpu


def measure(dataset, num_images: int, warmup_images: int):
  """(images per wall second, images per CPU second) over num_images after a warm-up."""
  iterator = iter(dataset)
  seen = 0
  while seen < warmup_images:
    batch = next(iterator)
    seen += _batch_size(batch)
  seen = 0
  wall, cpu = time.perf_counter(), time.process_time()
  while seen < num_images:
    seen += _batch_size(next(iterator))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return seen / wall, seen / cpu


def _batch_size(batch):
  images = batch[0]['image'] if isinstance(batch[0], dict) else batch[0]
  return int(images.shape[0])


FLOAT_IN_DATA = 'float in tf.data'
UNCACHED = 'pipeline, no cache'
GRAPH_FINISH = 'in-graph finish'
STAGES = (('raw decode', raw_decode_dataset), ('pipeline', pipeline_dataset),
          (FLOAT_IN_DATA, float_pipeline_dataset), (UNCACHED, uncached_pipeline_dataset))


def run_dataset(name, data_dir, data_config, args, warmup_images):
  # For cached datasets the uncached pipeline shows the rate of the first epoch.
  stages = [(label, make) for label, make in STAGES
            if label != UNCACHED or data_config.cache_decoded]
  rows = {label: [] for label, _ in stages}
  rows[GRAPH_FINISH] = []
  for round_index in range(args.rounds):
    for label, make in stages:
      # Only the pipeline caches decoded images; the others need no epoch of warm-up.
      warmup = warmup_images if label == 'pipeline' else 2 * args.batch_size
      rate = measure(make(data_dir, data_config, args.batch_size), args.images, warmup)
      rows[label].append(rate)
      print(f'  {name} round {round_index + 1}: {label:18s} {rate[0]:8.0f} img/s wall, '
            f'{rate[1]:8.0f} img/CPU-s', flush=True)
    rate = measure_graph_finish(data_dir, data_config, args.batch_size, args.images)
    rows[GRAPH_FINISH].append(rate)
    print(f'  {name} round {round_index + 1}: {GRAPH_FINISH:18s} {rate[0]:8.0f} img/s wall, '
          f'{rate[1]:8.0f} img/CPU-s', flush=True)
  result = {}
  for label, rates in rows.items():
    result[label] = {
        'images_per_second': statistics.median(r[0] for r in rates),
        'images_per_cpu_second': statistics.median(r[1] for r in rates),
        'all_rounds': [{'wall': r[0], 'cpu': r[1]} for r in rates],
    }
  raw, pipe = result['raw decode'], result['pipeline']
  result['pipeline_is'] = ('TrainingPipeline.deferred: uint8 crops + their choices, as '
                           'make_input_fn feeds the Estimator')
  result['ratio_per_cpu_second'] = pipe['images_per_cpu_second'] / raw['images_per_cpu_second']
  result['ratio_wall'] = pipe['images_per_second'] / raw['images_per_second']
  for label, key in ((FLOAT_IN_DATA, 'float_in_data_ratio_per_cpu_second'),
                     (UNCACHED, 'uncached_ratio_per_cpu_second')):
    if label in result:
      result[key] = result[label]['images_per_cpu_second'] / raw['images_per_cpu_second']
  result[GRAPH_FINISH]['batch_size'] = args.batch_size
  # CPU seconds per image add up: the deferred pipeline's plus the in-graph finish's.
  combined = 1.0 / (1.0 / pipe['images_per_cpu_second'] +
                    1.0 / result[GRAPH_FINISH]['images_per_cpu_second'])
  result['pipeline_plus_finish_images_per_cpu_second'] = combined
  result['pipeline_plus_finish_ratio_per_cpu_second'] = combined / raw['images_per_cpu_second']
  return result


def machine_info():
  model = platform.processor()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return {
      'host': platform.node(), 'cpu': model, 'cores': len(os.sched_getaffinity(0)),
      'platform': platform.platform(), 'python': platform.python_version(),
      'tensorflow': tf.__version__, 'numpy': np.__version__,
      'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      'alexnet_tf': alexnet_tf.__version__,
      'tf_enable_onednn_opts': os.environ.get('TF_ENABLE_ONEDNN_OPTS', ''),
      'tf_cpu_allocator_use_bfc': os.environ.get('TF_CPU_ALLOCATOR_USE_BFC', ''),
  }


def main(argv=None):
  args = parse_args(argv)

  names = [n for n in args.datasets.split(',') if n]
  results = {'machine': machine_info(), 'settings': {
      'records': args.records, 'images_per_run': args.images, 'batch_size': args.batch_size,
      'rounds': args.rounds, 'smoke': args.smoke, 'cifar_dir': args.cifar_dir,
      'cifar_tar': args.cifar_tar}, 'datasets': {}}
  with tempfile.TemporaryDirectory(prefix='bench_input_pipeline_') as tmp:
    for name in names:
      if name == 'imagenet':
        data_config = recipes.get_config('imagenet').data
        data_dir = os.path.join(tmp, 'imagenet')
        write_dataset(data_dir, imagenet_images(args.records), 8, 'imagenet-sample-photos')
        source = 'sample photos 400x350 -> 256x256 JPEG q95'
      elif name == 'cifar':
        data_config = recipes.get_config('cifar10').data
        if args.cifar_dir:
          data_dir, source = args.cifar_dir, f'converted shards {args.cifar_dir}'
        else:
          data_dir = os.path.join(tmp, 'cifar')
          if args.cifar_tar:
            images, source = cifar_images_from_tar(args.cifar_tar, args.records), 'CIFAR-10 JPEGs'
          else:
            images, source = cifar_images_from_photos(args.records), 'photo crops 32x32 PNG'
          write_dataset(data_dir, images, 8, 'cifar-bench')
      else:
        raise SystemExit(f'unknown dataset {name!r}; choose from imagenet, cifar')
      # The shuffle buffer of a real run would hold more than this benchmark's records.
      data_config = dataclasses.replace(data_config,
                                        shuffle_buffer=min(data_config.shuffle_buffer,
                                                           args.records))
      count = records.read_metadata(data_dir).counts[records.TRAIN]
      warmup = count + args.batch_size if data_config.cache_decoded else 2 * args.batch_size
      print(f'{name}: {source}, {count} records, {data_config}', flush=True)
      result = run_dataset(name, data_dir, data_config, args, warmup)
      result['source'] = source
      result['data_config'] = dataclasses.asdict(data_config)
      results['datasets'][name] = result

  print()
  print(f'{"dataset":10s} {"raw decode img/s":>17s} {"pipeline img/s":>15s} '
        f'{"raw img/CPU-s":>14s} {"pipe img/CPU-s":>15s} {"ratio":>6s}  '
        f'(target ratio >= {TARGET_RATIO})')
  for name, r in results['datasets'].items():
    raw, pipe = r['raw decode'], r['pipeline']
    verdict = 'ok' if r['ratio_per_cpu_second'] >= TARGET_RATIO else 'BELOW'
    print(f'{name:10s} {raw["images_per_second"]:17.0f} {pipe["images_per_second"]:15.0f} '
          f'{raw["images_per_cpu_second"]:14.0f} {pipe["images_per_cpu_second"]:15.0f} '
          f'{r["ratio_per_cpu_second"]:6.2f}  {verdict}')
    print(f'{"":10s} pipeline = {r["pipeline_is"]}')
    if FLOAT_IN_DATA in r:
      print(f'{"":10s} float stage in tf.data (make_dataset default): '
            f'{r[FLOAT_IN_DATA]["images_per_cpu_second"]:.0f} img/CPU-s, ratio '
            f'{r["float_in_data_ratio_per_cpu_second"]:.2f}')
    if GRAPH_FINISH in r:
      finish = r[GRAPH_FINISH]
      print(f'{"":10s} float stage in the graph (batch {finish["batch_size"]}): '
            f'{finish["images_per_second"]:.0f} img/s wall, '
            f'{finish["images_per_cpu_second"]:.0f} img/CPU-s; pipeline + finish '
            f'{r["pipeline_plus_finish_images_per_cpu_second"]:.0f} img/CPU-s, ratio '
            f'{r["pipeline_plus_finish_ratio_per_cpu_second"]:.2f}')
    if UNCACHED in r:
      print(f'{"":10s} without cache_decoded (a first epoch): '
            f'{r[UNCACHED]["images_per_cpu_second"]:.0f} img/CPU-s, ratio '
            f'{r["uncached_ratio_per_cpu_second"]:.2f}')
  machine = results['machine']
  print(f'{machine["date"]}, {machine["cpu"]}, {machine["cores"]} cores, '
        f'TF {machine["tensorflow"]}, TF_CPU_ALLOCATOR_USE_BFC='
        f'{machine["tf_cpu_allocator_use_bfc"] or "(unset)"}')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)
    print(f'wrote {args.json}')
  return results


if __name__ == '__main__':
  main()
