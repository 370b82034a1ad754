"""Fine-tuning: a new run that starts from the weights of another run directory.

`TrainConfig.init_from` names any run directory of this project: a training run, or imported
weights (tools/import_weights.py writes the same files). What the new run takes from it:

- The net and its input preprocessing, from DIR's run.json (`inherit_config`): the layer
  table, image size, crop, padding, mean mode, LRN, and whatever else the two configs hold.
  The weights are only right for inputs made the way they were trained on. The new dataset
  sets num_classes alone (`estimator.model_config_for`).
- DIR's training mean (train_mean.npy), subtracted from the new images (`open_dataset`): the
  weights were trained on images minus that mean, not minus the new dataset's.
- Every variable of the new net but the classifier, from DIR's newest checkpoint, through
  `tf.estimator.WarmStartSettings` (`warm_start_settings`). The classifier starts fresh for
  the new classes. The Estimator warm-starts only a model directory without a checkpoint,
  so a resumed fine-tuning run continues from its own. A checkpoint that lacks one of the
  variables, or holds one with another shape, is refused naming it (`check_compatible`).

Training: only the variables of `TrainConfig.trainable` layers (all by default) are given to
the optimizer (`trainable_variables`), so frozen ones get no gradient, no weight decay and no
momentum slot. `restored_lr_scale` multiplies the gradients of the restored variables that
train (`scale_restored_gradients`); for momentum SGD that is exactly a learning rate lowered
by that factor for them (Caffe's lr_mult), weight decay included.
"""

import dataclasses
import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import input_pipeline, records, rundir
from alexnet_tf.config import Config, ModelConfig, TrainConfig, layer_names
from alexnet_tf.model import build_alexnet

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

GradsAndVars = List[Tuple[Optional[tf.Tensor], tf.Variable]]


def inherit_config(config: Config, init_from: str) -> Config:
  """`config` with the model and data settings of the run in `init_from`; its training
  settings stay. ValueError (FileNotFoundError) when `init_from` holds no readable run."""
  try:
    source = rundir.load_config(init_from)
  except (TypeError, KeyError) as e:  # a run.json of another shape: from_dict's errors
    raise ValueError(f'{init_from}/{rundir.RUN_FILE}: not a run of this version of '
                     f'alexnet_tf ({e})') from None
  return dataclasses.replace(config, model=source.model, data=source.data)


def open_dataset(data_dir: str, config: Config) -> input_pipeline.Source:
  """The new run's training data, checked against the inherited preprocessing, with the
  training mean of `config.train.init_from` in place of the dataset's own.

  Raises:
    ValueError naming `data_dir`: the images are smaller than the crop, or of another size
    than the per-pixel mean the weights were trained with (and `input_pipeline.open_dataset`'s
    other checks).
  """
  init_from, data = config.train.init_from, config.data
  mean = rundir.training_mean(init_from)
  size = records.read_metadata(data_dir).image_size
  # Images too small for the crop are input_pipeline's to report, as without init_from.
  if mean is not None and np.ndim(mean) == 3 and size is not None and (
      min(size) + 2 * data.pad >= data.crop_size and tuple(size) != tuple(mean.shape[:2])):
    raise ValueError(f'{data_dir}: the images are stored at {size[0]}x{size[1]}, but the '
                     f'weights of {init_from} were trained minus a per-pixel mean of '
                     f'{mean.shape[0]}x{mean.shape[1]} images; convert the dataset with '
                     f'--resize {mean.shape[0]}')
  return input_pipeline.open_dataset(data_dir, data, training=True, mean=mean)


def layer_of(variable_name: str, model: ModelConfig) -> str:
  """The layer a variable of the net belongs to: 'alexnet/tower1/conv2/weights' -> 'conv2'."""
  found = [part for part in variable_name.split('/') if part in layer_names(model)]
  if len(found) != 1:
    raise ValueError(f'{variable_name} is not a variable of one layer of the {model.name} net')
  return found[0]


def is_classifier(variable_name: str, model: ModelConfig) -> bool:
  return layer_of(variable_name, model) == model.logits_name


def net_variables(model: ModelConfig) -> Dict[str, List[int]]:
  """{name: shape} of every variable of the net `model` builds, in build order.

  Built in a graph of its own with TF's own LRN op: the variables do not depend on the LRN
  implementation, and this must not compile the kernel library.
  """
  with tf.Graph().as_default():
    images = tf1.placeholder(tf.float32, [None, model.image_size, model.image_size, 3])
    build_alexnet(images, dataclasses.replace(model, lrn_impl='reference'), training=False)
    return {v.op.name: v.shape.as_list() for v in tf1.global_variables()}


def check_compatible(checkpoint: str, model: ModelConfig) -> List[str]:
  """The variables to restore: every one of the net but the classifier's.

  Raises:
    ValueError naming the first of them that `checkpoint` lacks or holds with another shape.
  """
  stored = dict(tf.train.list_variables(checkpoint))
  restored = []
  for name, shape in net_variables(model).items():
    if is_classifier(name, model):
      continue
    if stored.get(name) != shape:
      there = 'has no such variable' if name not in stored else f'holds it as {stored[name]}'
      raise ValueError(f'{checkpoint} does not fit the {model.name} net to fine-tune: {name} '
                       f'is {shape} in the net, and the checkpoint {there} (the net is '
                       f'built from the run.json beside it; did --tower-devices change the '
                       f'number of towers?)')
    restored.append(name)
  return restored


def warm_start_settings(config: Config) -> Optional[tf.estimator.WarmStartSettings]:
  """What the Estimator restores from `config.train.init_from` (None without it): every
  variable of the net but the classifier, from its newest checkpoint, checked first."""
  train = config.train
  if train.init_from is None:
    return None
  checkpoint = rundir.resolve_checkpoint(train.init_from, 'latest')
  restored = check_compatible(checkpoint, config.model)
  layers = train.trainable or layer_names(config.model)
  frozen = [l for l in layer_names(config.model) if l not in layers]
  log.info('fine-tuning from %s: %d variables restored, %s new; training %s%s%s', checkpoint,
           len(restored), config.model.logits_name, ','.join(layers),
           f', frozen {",".join(frozen)}' if frozen else '',
           f', restored layers at {train.restored_lr_scale:g}x the learning rate'
           if train.restored_lr_scale != 1.0 and len(layers) > 1 else '')
  # Anchored names: a bare name is a prefix regex, which would also match its Momentum slot.
  return tf.estimator.WarmStartSettings(
      checkpoint, vars_to_warm_start=[f'^{re.escape(name)}:' for name in restored])


def trainable_variables(variables: Sequence[tf.Variable], model: ModelConfig,
                        train: TrainConfig) -> List[tf.Variable]:
  """Those of the net's `variables` that train: the `train.trainable` layers' (all if none)."""
  if not train.trainable:
    return list(variables)
  return [v for v in variables if layer_of(v.op.name, model) in train.trainable]


def scale_restored_gradients(grads_and_vars: GradsAndVars, model: ModelConfig,
                             train: TrainConfig) -> GradsAndVars:
  """The gradients of restored (not classifier) variables times `train.restored_lr_scale`."""
  scale = train.restored_lr_scale
  if train.init_from is None or scale == 1.0:
    return list(grads_and_vars)
  return [(g if g is None or is_classifier(v.op.name, model) else g * scale, v)
          for g, v in grads_and_vars]
