"""A weights file -> a run directory that evaluate, export, predict and train --init-from take.

The directory is what a training run leaves (`alexnet_tf.rundir`), with the imported weights
as its only checkpoint:

  run.json                   the caffe_alexnet config; its dataset is the directory itself
  dataset.json, labels.txt   the 1000 ILSVRC-2012 classes (no shards: evaluate with
                             --data-dir), stored size 256x256
  synsets.txt                the WordNet id of each label
  train_mean.npy             the (R, G, B) mean the weights were trained with
  model.ckpt-0.*, checkpoint the variables of `model.build_alexnet` and global_step = 0
  best/                      the same checkpoint (hard links), what evaluate and export read

It is built in a temporary sibling directory and renamed into place when complete, so a failed
import leaves nothing behind.
"""

import dataclasses
import importlib.resources
import logging
import os
import shutil
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import recipes
from alexnet_tf import input_pipeline, model, records, rundir
from alexnet_tf.convert.imagenet import SYNSETS_FILE
from alexnet_tf.weights import mapping, readers

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

# The paper's (and Caffe's) stored images: 256x256, from which the 227 crops are cut.
STORED_SIZE = 256
SYNSETS_DATA = 'ilsvrc2012_synsets.txt'  # in alexnet_tf/data: `<wnid> <words>` lines
CHECKPOINT_PREFIX = 'model.ckpt'


def ilsvrc2012_synsets() -> Tuple[Tuple[str, str], ...]:
  """The 1000 ILSVRC-2012 classes as (wnid, words), in sorted-wnid order: Caffe's label order.

  From the package data alexnet_tf/data/ilsvrc2012_synsets.txt (the format of Caffe's
  synset_words.txt; see the README for its provenance).
  """
  text = importlib.resources.files('alexnet_tf').joinpath('data', SYNSETS_DATA).read_text(
      encoding='utf-8')
  return tuple(tuple(line.split(' ', 1)) for line in text.splitlines() if line.strip())


def import_weights(weights_path: str, output_dir: str,
                   config: Optional[config_lib.Config] = None) -> str:
  """Reads bvlc_alexnet weights (`readers.read_weights`) and writes `output_dir` (module
  docstring); returns the checkpoint's path.

  Args:
    config: the net to import into; default `get_config('caffe_alexnet')`.

  Raises:
    readers.WeightsError: the file cannot be imported (the message names it and the layer).
    FileExistsError: output_dir exists and is not empty.
  """
  config = config or recipes.get_config('caffe_alexnet')
  check_output_dir(output_dir)
  weights = readers.read_weights(weights_path)
  variables = mapping.to_variables(mapping.to_tf_layout(weights), config.model)
  return write_run(weights, variables, output_dir, config)


def check_output_dir(output_dir: str) -> None:
  """FileExistsError unless output_dir is new or an empty directory."""
  if os.path.isdir(output_dir) and os.listdir(output_dir) or os.path.isfile(output_dir):
    raise FileExistsError(f'{output_dir} exists and is not empty: choose a new --output-dir')


def write_run(weights: readers.FileWeights, variables: Dict[str, np.ndarray], output_dir: str,
              config: config_lib.Config) -> str:
  """Writes `output_dir` (module docstring) for `variables` (`mapping.to_variables` of
  `weights` for `config`); returns the checkpoint's path."""
  output_dir = os.path.abspath(output_dir)
  check_output_dir(output_dir)
  log.info('%s (%s, %s layout): writing the run directory %s', weights.path, weights.format,
           weights.layout, output_dir)
  synsets = ilsvrc2012_synsets()
  # Not tempfile.mkdtemp: its mode 0700 would stay with the renamed directory.
  tmp = f'{output_dir}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)  # left by a killed import of this pid
  os.makedirs(tmp)
  try:
    _write_metadata(tmp, synsets, weights)
    # The run's dataset is the directory itself, under its final name.
    source = dataclasses.replace(input_pipeline.open_dataset(tmp, config.data),
                                 data_dir=output_dir)
    rundir.save_run(tmp, config, source)
    step = 0
    _write_checkpoint(variables, config.model, os.path.join(tmp, CHECKPOINT_PREFIX), step)
    _link_best(tmp, step)
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)  # empty (checked above)
    os.rename(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info('wrote %s: evaluate it with python -m alexnet_tf.evaluate --model-dir %s '
           '--data-dir DATA, export it with python -m alexnet_tf.export --model-dir %s',
           output_dir, output_dir, output_dir)
  return os.path.join(output_dir, f'{CHECKPOINT_PREFIX}-{step}')


def _write_metadata(directory: str, synsets, weights: readers.FileWeights) -> None:
  metadata = records.DatasetMetadata(
      name='ilsvrc2012', classes=tuple(words for _, words in synsets), counts={},
      num_shards={}, image_size=(STORED_SIZE, STORED_SIZE), color_stats=None,
      source=f'bvlc_alexnet weights imported from {os.path.abspath(weights.path)} '
             f'({weights.format})')
  with open(os.path.join(directory, SYNSETS_FILE), 'w', encoding='utf-8') as f:
    f.write(''.join(wnid + '\n' for wnid, _ in synsets))
  records.write_metadata(directory, metadata)


def _write_checkpoint(variables: Dict[str, np.ndarray], model_config: config_lib.ModelConfig,
                      prefix: str, step: int) -> None:
  """Saves `variables` into the graph `model.build_alexnet` makes, plus global_step."""
  # Plain TF ops and no device pins: building the graph must not compile the LRN kernel.
  net = dataclasses.replace(model_config, lrn_impl='reference',
                            tower_devices=('',) * model_config.num_towers)
  with tf.Graph().as_default():
    size = net.image_size
    model.build_alexnet(tf1.placeholder(tf.float32, [None, size, size, 3]), net, training=False)
    global_step = tf1.train.get_or_create_global_step()
    graph_vars = {v.op.name: v for v in tf1.global_variables() if v is not global_step}
    if set(graph_vars) != set(variables):
      raise RuntimeError(f'the imported variables do not match the graph: only in the graph '
                         f'{sorted(set(graph_vars) - set(variables))}, only imported '
                         f'{sorted(set(variables) - set(graph_vars))}')
    feeds, assigns = {}, []
    for name, var in graph_vars.items():
      value = tf1.placeholder(var.dtype.base_dtype, var.shape)
      feeds[value] = variables[name]
      assigns.append(var.assign(value))
    saver = tf1.train.Saver(save_relative_paths=True)  # the directory is renamed afterwards
    with tf1.Session() as session:
      session.run(assigns + [global_step.assign(step)], feeds)
      saver.save(session, prefix, global_step=step, write_meta_graph=False)


def _link_best(directory: str, step: int) -> None:
  """directory/best/ as `rundir.keep_best` leaves it, with hard links instead of copies."""
  best = os.path.join(directory, rundir.BEST_DIR)
  os.makedirs(best)
  name = f'{CHECKPOINT_PREFIX}-{step}'
  for entry in os.listdir(directory):
    if entry.startswith(name + '.'):
      try:
        os.link(os.path.join(directory, entry), os.path.join(best, entry))
      except OSError:  # a file system without hard links
        shutil.copy2(os.path.join(directory, entry), best)
  with open(os.path.join(best, 'checkpoint'), 'w', encoding='utf-8') as f:
    f.write(f'model_checkpoint_path: "{name}"\n')
  with open(os.path.join(best, rundir.BEST_METRICS_FILE), 'w', encoding='utf-8') as f:
    f.write(f'{{"step": {step}, "imported": true}}\n')
