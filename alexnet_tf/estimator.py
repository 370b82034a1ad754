"""The `tf.estimator.Estimator` of a run, and the session it runs in.

`make_estimator` is the one place an Estimator is built: the run loop trains and evaluates
through it, `evaluate` evaluates a checkpoint, `export` exports one. Its `purpose` decides the
LRN (`lrn.resolve`): IN_PROCESS may build the fused kernel, EXPORT never does.
"""

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf

from alexnet_tf import lrn, records
from alexnet_tf.config import FP32, Config, ModelConfig
from alexnet_tf.model_fn import make_model_fn
from alexnet_tf.schedule import LearningRateFn

tf1 = tf.compat.v1


def session_config(model_config: ModelConfig, devices: Sequence[str] = ()) -> tf1.ConfigProto:
  """Soft placement (towers ask for GPUs) and as many CPU devices as the towers (and
  `devices`, e.g. the replicas of a MirroredStrategy) name."""
  cpus = {tf.DeviceSpec.from_string(d).device_index
          for d in (*model_config.tower_devices, *devices)
          if tf.DeviceSpec.from_string(d).device_type in ('CPU', 'cpu')}
  count = max([i + 1 for i in cpus if i is not None] + [1])
  return tf1.ConfigProto(allow_soft_placement=True, device_count={'CPU': count})


def model_config_for(config: Config, metadata: records.DatasetMetadata,
                     purpose: str = lrn.IN_PROCESS) -> ModelConfig:
  """The configured net with as many outputs as the dataset has classes, and the LRN
  `lrn.resolve` gives its towers for `purpose`."""
  model = config.model
  towers = model.tower_devices[:model.num_towers]
  return dataclasses.replace(model, num_classes=metadata.num_classes,
                             lrn_impl=lrn.resolve(model.lrn_impl, purpose, towers))


def make_estimator(config: Config, metadata: records.DatasetMetadata, model_dir: str,
                   learning_rate: Optional[LearningRateFn] = None, seed: Optional[int] = None,
                   save_every: Optional[int] = None,
                   purpose: str = lrn.IN_PROCESS,
                   warm_start: Optional[tf.estimator.WarmStartSettings] = None,
                   train_distribute: Optional[tf.distribute.Strategy] = None,
                   eval_distribute: Optional[tf.distribute.Strategy] = None,
                   session: Optional[tf1.ConfigProto] = None,
                   max_worker_delay_secs: Optional[int] = None,
                   export_precision: str = FP32) -> tf.estimator.Estimator:
  """An Estimator over `model_dir`; `save_every` steps it checkpoints (and at the end).

  `learning_rate` (global_step -> rate) is needed only to train; `purpose` is lrn.EXPORT for
  an Estimator that only exports (its graphs never hold the kernel library's ops), and
  `export_precision` the precision its exported graphs compute in (`model_fn`).
  `warm_start` (finetune.warm_start_settings) initialises a model_dir without a checkpoint.
  `train_distribute` and `eval_distribute` are the tf.distribute strategies that train and
  evaluate (`alexnet_tf.distribute` makes them); `session` replaces
  `session_config(...)` (a cluster task's device filters); `max_worker_delay_secs` bounds
  the head start train_and_evaluate gives a cluster's chief (None: TF's, up to 60 s).
  """
  model_config = model_config_for(config, metadata, purpose)
  run_config = tf.estimator.RunConfig(
      model_dir=model_dir, tf_random_seed=seed,
      session_config=session or session_config(model_config),
      train_distribute=train_distribute, eval_distribute=eval_distribute,
      save_checkpoints_steps=save_every, save_checkpoints_secs=None,
      keep_checkpoint_max=config.train.keep_checkpoints, save_summary_steps=100,
      log_step_count_steps=None, experimental_max_worker_delay_secs=max_worker_delay_secs)
  model_fn = make_model_fn(model_config, config.train, learning_rate, metadata.classes,
                           export_precision=export_precision)
  return tf.estimator.Estimator(model_fn, config=run_config, warm_start_from=warm_start)
