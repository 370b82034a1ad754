"""SavedModel export for TF Serving, and `python -m alexnet_tf.export`.

The exported model takes a batch of encoded JPEG/PNG files and applies the evaluation
preprocessing in the graph (resize to the stored size as the converter does, mean
subtraction, centre crop), so a client sends file bytes and nothing else:

  <export_base>/<version>/saved_model.pb + variables/   (the layout TF Serving loads)
  tag 'serve'
  signature 'serving_default' (predict): image_bytes DT_STRING [-1] ->
      classes int64 [-1], probabilities float [-1, num_classes], logits float [-1, num_classes],
      top5_classes int64 [-1, 5], top5_probabilities float [-1, 5],
      top5_class_names string [-1, 5]
  signature 'float_images:serving_default' (predict): images float [-1, S, S, 3], already
      preprocessed (RGB, 0-255 minus the training mean, cropped), -> the same outputs.
  assets.extra/alexnet_config.json   the config and class names (evaluate --saved-model)
  assets.extra/train_mean.npy        the training mean those float images have subtracted
                                     (absent for subtract_mean='none')

The graph computes in fp32 whatever precision the run trained in (the checkpoint's variables
are fp32 in every precision); `--precision bf16` exports a bf16 graph instead, for
throughput serving on CPUs with bf16 matrix units or Ampere GPUs (inputs and outputs keep
their dtypes; only the layers between them change).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
from typing import Optional

from alexnet_tf import cli_logging  # first: quiets TensorFlow's C++ logs before it loads

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import decoding, eval_crops, lrn, records, rundir
from alexnet_tf import estimator as estimator_lib
from alexnet_tf.config import FP32, PRECISIONS, Config

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

IMAGE_BYTES = 'image_bytes'
FLOAT_IMAGES = 'images'
# The receiver alternative; TF names its signature 'float_images:serving_default'.
FLOAT_SIGNATURE = 'float_images'
SERVING_SIGNATURE = 'serving_default'
FLOAT_SERVING_SIGNATURE = f'{FLOAT_SIGNATURE}:{SERVING_SIGNATURE}'
CONFIG_ASSET = 'alexnet_config.json'  # in assets.extra/
MEAN_ASSET = 'train_mean.npy'  # in assets.extra/: the mean the float signature's inputs lack


def serving_input_receiver_fn(config: Config, metadata: records.DatasetMetadata, mean,
                              max_pixels: int = decoding.MAX_SERVING_PIXELS):
  """The receiver: encoded image strings [-1] -> {'image': float32 [-1, S, S, 3]}.

  JPEG and PNG files of at most `max_pixels` pixels; others are refused from their header.
  """
  crop, pad = config.data.crop_size, config.data.pad
  stored = metadata.image_size[0] if metadata.image_size else None
  if metadata.image_size and metadata.image_size[0] != metadata.image_size[1]:
    raise ValueError(f'{metadata.name}: stored images are {metadata.image_size}; serving '
                     f'resizes to a square stored size')

  def preprocess(encoded):  # stored size unknown: the whole evaluation input per image
    return eval_crops.eval_crops(decoding.decode_limited(encoded, max_pixels), mean, crop, pad)

  def decode(encoded):  # uint8 [stored, stored, 3], as the converter stores images
    return decoding.decode_for_serving(encoded, stored, max_pixels)

  def batch_of_images(image_bytes):
    if not stored:
      return tf.map_fn(preprocess, image_bytes,
                       fn_output_signature=tf.TensorSpec([crop, crop, 3], tf.float32))
    # Only decoding is per image; a single image (the latency case) skips map_fn's loop.
    stored_images = tf.cond(
        tf.equal(tf.size(image_bytes), 1),
        lambda: decode(image_bytes[0])[tf.newaxis],
        lambda: tf.map_fn(decode, image_bytes,
                          fn_output_signature=tf.TensorSpec([stored, stored, 3], tf.uint8)))
    stored_images.set_shape([None, stored, stored, 3])
    return eval_crops.eval_crops(stored_images, mean, crop, pad)

  def receiver_fn():
    image_bytes = tf1.placeholder(tf.string, [None], name=IMAGE_BYTES)
    # An empty request would otherwise fail deep in the net, with a message about shapes.
    nonempty = tf.debugging.assert_positive(
        tf.size(image_bytes), message='the request holds no images: send one or more files')
    with tf.control_dependencies([nonempty]):
      images = batch_of_images(tf.identity(image_bytes))
    # Feedable directly: the float signature enters here, after the preprocessing.
    images = tf1.placeholder_with_default(images, [None, crop, crop, 3], name=FLOAT_IMAGES)
    return tf.estimator.export.ServingInputReceiver(
        {'image': images}, {IMAGE_BYTES: image_bytes},
        receiver_tensors_alternatives={FLOAT_SIGNATURE: {FLOAT_IMAGES: images}})
  return receiver_fn


def export_saved_model(estimator: tf.estimator.Estimator, config: Config,
                       metadata: records.DatasetMetadata, mean: Optional[np.ndarray],
                       export_dir_base: str, checkpoint_path: Optional[str] = None,
                       max_pixels: int = decoding.MAX_SERVING_PIXELS) -> str:
  """Exports `checkpoint_path` (default: the newest) to `export_dir_base/<timestamp>/`.

  `mean` is the training mean ([H, W, 3], [3] or None: `rundir.training_mean`): the receiver
  subtracts it, and it is stored in assets.extra for clients of the float signature.
  `max_pixels` bounds the images the receiver decodes.
  """
  with tempfile.TemporaryDirectory() as tmp:
    # The config travels with the model: evaluate --saved-model needs the crop settings.
    assets = {CONFIG_ASSET: os.path.join(tmp, CONFIG_ASSET)}
    with open(assets[CONFIG_ASSET], 'w', encoding='utf-8') as f:
      json.dump({'config': config_lib.to_dict(config), 'classes': list(metadata.classes)}, f)
    if mean is not None:
      assets[MEAN_ASSET] = os.path.join(tmp, MEAN_ASSET)
      np.save(assets[MEAN_ASSET], np.asarray(mean, np.float32))
    path = estimator.export_saved_model(
        export_dir_base, serving_input_receiver_fn(config, metadata, mean, max_pixels),
        assets_extra=assets, checkpoint_path=checkpoint_path)
  return path.decode() if isinstance(path, bytes) else path


def export_run(model_dir: str, export_dir_base: Optional[str] = None, checkpoint: str = 'best',
               data_dir: Optional[str] = None,
               max_pixels: int = decoding.MAX_SERVING_PIXELS, precision: str = FP32) -> str:
  """Exports a training run's checkpoint ('best', 'latest' or a path) with its training mean
  to `export_dir_base` (default MODEL_DIR/export); returns the SavedModel's directory.

  `data_dir` overrides the dataset the class names come from; `precision` is the one the
  exported graph computes in (and the one its stored config names). Never builds the fused
  LRN kernel: the Estimator is made for lrn.EXPORT.
  """
  run = rundir.load_run(model_dir, data_dir)
  path = rundir.resolve_checkpoint(model_dir, checkpoint)
  rundir.check_classes(path, run.config, run)
  config = dataclasses.replace(run.config,
                               model=dataclasses.replace(run.config.model, precision=precision))
  estimator = estimator_lib.make_estimator(config, run.metadata, model_dir, purpose=lrn.EXPORT,
                                           export_precision=precision)
  return export_saved_model(estimator, config, run.metadata, rundir.training_mean(model_dir),
                            export_dir_base or os.path.join(model_dir, 'export'), path,
                            max_pixels)


def read_exported_config(saved_model_dir: str):
  """(Config, class names) stored with an export by `export_saved_model`."""
  path = os.path.join(saved_model_dir, 'assets.extra', CONFIG_ASSET)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: {saved_model_dir} was not exported by '
                            f'alexnet_tf.export')
  with open(path, encoding='utf-8') as f:
    raw = json.load(f)
  return config_lib.from_dict(raw['config']), tuple(raw['classes'])


def read_exported_mean(saved_model_dir: str) -> Optional[np.ndarray]:
  """The training mean stored with an export ([H, W, 3] or [3]), None if it has none
  (subtract_mean='none', or an export from before the mean was stored)."""
  path = os.path.join(saved_model_dir, 'assets.extra', MEAN_ASSET)
  return np.load(path) if os.path.isfile(path) else None


def latest_export(export_dir_base: str) -> str:
  """The newest numbered SavedModel directory under `export_dir_base`."""
  versions = [d for d in os.listdir(export_dir_base) if d.isdigit()] if os.path.isdir(
      export_dir_base) else []
  if not versions:
    raise FileNotFoundError(f'{export_dir_base}: no exported SavedModel (numbered '
                            f'directories); run python -m alexnet_tf.export first')
  return os.path.join(export_dir_base, max(versions, key=int))


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be a positive number, got {text}')
  return value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m alexnet_tf.export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model-dir', required=True, help='a training run\'s directory')
  parser.add_argument('--checkpoint', default='best',
                      help='"best" (model-dir/best, the default), "latest", a directory such as '
                      'cycles/epoch-37, or a checkpoint path')
  parser.add_argument('--export-dir', help='export base (default: MODEL_DIR/export)')
  parser.add_argument('--data-dir', help='dataset for the class names (default: the one '
                      'the run trained on; the mean is always the training mean)')
  parser.add_argument('--max-pixels', type=_positive_int, default=decoding.MAX_SERVING_PIXELS,
                      help='the largest image (height x width) the model decodes; larger '
                      'requests are refused from their header (default: %(default)s)')
  parser.add_argument('--precision', default=FP32, choices=PRECISIONS,
                      help='what the exported graph computes in: fp32 (the default: best '
                      'batch-1 latency, runs anywhere), or bf16/fp16 for throughput serving on '
                      'hardware with those matrix units')
  parser.add_argument('--verbose', action='store_true', help='the traceback of an error too')
  args = parser.parse_args(argv)
  cli_logging.setup()
  try:
    path = export_run(args.model_dir, args.export_dir, args.checkpoint, args.data_dir,
                      args.max_pixels, args.precision)
  except (OSError, ValueError) as e:
    return cli_logging.fail(log, e, args.verbose)
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
