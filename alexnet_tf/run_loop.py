"""The training loop: Estimator training with periodic evaluation, the plateau schedule,
the best checkpoint, resumption and the final export.

One `Estimator.train` call runs the whole run in one session, so the input pipeline (and its
cache of decoded images), the graph and the session are built once, not once per epoch. Every
evaluation boundary is a checkpoint; right after it is written, `_EvaluationListener`
evaluates it on the validation split (in its own graph and session), records it and updates
the plateau schedule, whose rate is a variable of the training graph set in place.

A run killed at any point and started again with the same command continues from its newest
checkpoint with the schedule state it had; a checkpoint whose evaluation was lost to the kill
is evaluated first (the Estimator re-saves the starting checkpoint, which reaches the
listener like any other).
"""

import dataclasses
import glob
import json
import logging
import math
import os
import shutil
import time
from typing import Dict, Optional, Sequence

import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import hooks, input_pipeline, kernels, records, schedule
from alexnet_tf.config import Config
from alexnet_tf.model_fn import make_model_fn

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

BEST_DIR = 'best'
HISTORY_FILE = 'history.jsonl'  # one JSON line per evaluation
RUN_FILE = 'run.json'  # the config and dataset of the run, for resume, export and evaluate


@dataclasses.dataclass(frozen=True)
class Run:
  """What a model directory was trained with."""
  config: Config
  data_dir: str
  metadata: records.DatasetMetadata


def save_run(model_dir: str, config: Config, data_dir: str) -> None:
  """Records the run's config; refuses to resume a model directory with another network."""
  path = os.path.join(model_dir, RUN_FILE)
  if os.path.isfile(path):
    previous = load_run(model_dir, data_dir).config
    # Devices and the LRN implementation may change between sessions; the variables may not.
    comparable = dict(tower_devices=config.model.tower_devices, lrn_impl=config.model.lrn_impl)
    if dataclasses.replace(previous.model, **comparable) != config.model:
      raise ValueError(f'{model_dir} holds a run of another network ({path}); use a new '
                       f'--model-dir or the same settings')
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump({'config': config_lib.to_dict(config), 'data_dir': os.path.abspath(data_dir)},
              f, indent=2)
  os.replace(tmp, path)


def load_run(model_dir: str, data_dir: Optional[str] = None) -> Run:
  """The run recorded in `model_dir`; `data_dir` overrides the dataset it trained on."""
  path = os.path.join(model_dir, RUN_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: {model_dir} is not a training run of '
                            f'alexnet_tf (python -m alexnet_tf.train writes it)')
  with open(path, encoding='utf-8') as f:
    raw = json.load(f)
  data_dir = data_dir or raw['data_dir']
  return Run(config_lib.from_dict(raw['config']), data_dir, records.read_metadata(data_dir))


def resolve_checkpoint(model_dir: str, which: str = 'best') -> str:
  """'best' (model_dir/best), 'latest' (the newest), or a checkpoint path as given."""
  if which in ('best', 'latest'):
    directory = os.path.join(model_dir, BEST_DIR) if which == 'best' else model_dir
    path = tf1.train.latest_checkpoint(directory)
    if path is None:
      raise FileNotFoundError(f'{directory}: no checkpoint ({which})')
    return path
  if not os.path.isfile(which + ".index"):
    raise FileNotFoundError(f'{which}: no such checkpoint')
  return which


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """Step counts derived from the dataset size and the training config."""
  steps_per_epoch: int
  total_steps: int
  eval_every: int

  @classmethod
  def make(cls, config: Config, num_train: int) -> 'RunPlan':
    train = config.train
    steps_per_epoch = num_train // train.batch_size
    if steps_per_epoch < 1:
      raise ValueError(f'the training split has {num_train} examples, fewer than one batch '
                       f'of {train.batch_size}; lower --batch-size')
    total = train.max_steps if train.max_steps is not None else math.ceil(
        train.epochs * steps_per_epoch)
    eval_every = max(1, round(train.eval_every_epochs * steps_per_epoch))
    return cls(steps_per_epoch, total, min(eval_every, total))


def session_config(model_config) -> tf1.ConfigProto:
  """Soft placement (towers ask for GPUs) and as many CPU devices as the towers name."""
  cpus = {tf.DeviceSpec.from_string(d).device_index for d in model_config.tower_devices
          if tf.DeviceSpec.from_string(d).device_type in ('CPU', 'cpu')}
  count = max([i + 1 for i in cpus if i is not None] + [1])
  return tf1.ConfigProto(allow_soft_placement=True, device_count={'CPU': count})


def latest_step(model_dir: str) -> int:
  path = tf1.train.latest_checkpoint(model_dir)
  return int(path.rsplit('-', 1)[1]) if path else 0


def model_config_for(config: Config, metadata: records.DatasetMetadata):
  """The configured net with as many outputs as the dataset has classes, and an LRN this
  machine can run (`with_runnable_lrn`)."""
  return with_runnable_lrn(dataclasses.replace(config.model, num_classes=metadata.num_classes))


def with_runnable_lrn(model: config_lib.ModelConfig) -> config_lib.ModelConfig:
  """`model`, or, when its LRN is a kernel of ours that cannot run well here, the same net
  with that LRN's plain-op equivalent: the same function, so the same checkpoints train,
  evaluate and resume. Our kernels are CPU-only C++ built with g++: without a compiler they
  cannot be built, and towers on GPUs would have their LRN pulled back to the CPU."""
  fallback = config_lib.PORTABLE_LRN_IMPLS.get(model.lrn_impl)
  if fallback is None:
    return model
  towers = model.tower_devices[:model.num_towers]
  if tf.config.list_physical_devices('GPU') and any('gpu' in d.lower() for d in towers):
    log.info('towers on %s: LRN %r (plain TF ops, which run on the GPU) instead of the '
             'CPU-only %r', ', '.join(towers), fallback, model.lrn_impl)
    return dataclasses.replace(model, lrn_impl=fallback)
  problem = kernels.load_error()
  if problem is None:
    return model
  log.warning('LRN %r is not available here, using %r (the same function, slower): %s',
              model.lrn_impl, fallback, problem)
  return dataclasses.replace(model, lrn_impl=fallback)


def make_estimator(config: Config, metadata, model_dir, learning_rate=None, seed=None,
                   save_every=None):
  """An Estimator over `model_dir`; `save_every` steps it checkpoints (and at the end)."""
  model_config = model_config_for(config, metadata)
  run_config = tf.estimator.RunConfig(
      model_dir=model_dir, tf_random_seed=seed, session_config=session_config(model_config),
      save_checkpoints_steps=save_every, save_checkpoints_secs=None,
      keep_checkpoint_max=config.train.keep_checkpoints, save_summary_steps=100,
      log_step_count_steps=None)
  model_fn = make_model_fn(model_config, config.train, learning_rate, metadata.classes)
  return tf.estimator.Estimator(model_fn, config=run_config)


def train_and_evaluate(config: Config, data_dir: str, model_dir: str,
                       export_dir: Optional[str] = None,
                       extra_hooks: Sequence[tf1.train.SessionRunHook] = ()) -> Dict[str, float]:
  """Trains `config` on `data_dir` into `model_dir`, resuming what is there.

  Returns the metrics of the last evaluation. Exports a SavedModel to `export_dir` at the
  end when given. `extra_hooks` join the training session (a profiler, a timer).
  """
  metadata = records.read_metadata(data_dir)
  for split in (records.TRAIN, records.VALIDATION):
    records.shard_files(data_dir, split)  # fail now, not after an epoch of training
  plan = RunPlan.make(config, metadata.counts[records.TRAIN])
  os.makedirs(model_dir, exist_ok=True)
  save_run(model_dir, config, data_dir)
  log.info('%s: %d training examples, %d steps per epoch, %d steps in all, evaluating every '
           '%d steps; model dir %s', metadata.name, metadata.counts[records.TRAIN],
           plan.steps_per_epoch, plan.total_steps, plan.eval_every, model_dir)
  listener = _EvaluationListener(config, metadata, data_dir, model_dir, plan)
  step = latest_step(model_dir)
  if step:
    log.info('resuming from step %d (learning rate %g)', step, listener.state.learning_rate)
  if step < plan.total_steps:
    _train(config, metadata, data_dir, model_dir, plan, listener, step, extra_hooks)
  listener.evaluate_if_due(latest_step(model_dir))  # a finished run whose last eval was lost
  if export_dir:
    from alexnet_tf import export  # pylint: disable=import-outside-toplevel
    path = export.export_saved_model(make_estimator(config, metadata, model_dir), config,
                                     metadata, data_dir, export_dir)
    log.info('exported SavedModel to %s', path)
  return listener.metrics


def _learning_rate_fn(train: config_lib.TrainConfig, plan: RunPlan, state):
  if train.schedule == 'plateau':
    return schedule.plateau_variable(state.learning_rate)
  if train.schedule == 'step':
    return schedule.piecewise(train.learning_rate,
                              schedule.step_boundaries(train, plan.steps_per_epoch),
                              train.lr_decay_factor)
  raise ValueError(f'unknown schedule {train.schedule!r}; use "plateau" or "step"')


def _train(config, metadata, data_dir, model_dir, plan, listener, step, extra_hooks):
  """Trains from `step` to the end of the run in one session."""
  train = config.train
  # Seeded by the starting step: a resumed run must not replay the shuffle and dropout masks
  # it already saw.
  seed = None if train.seed is None else train.seed + step
  # Checkpoints land on evaluation boundaries, where the schedule is decided.
  estimator = make_estimator(config, metadata, model_dir,
                             _learning_rate_fn(train, plan, listener.state), seed,
                             save_every=plan.eval_every)
  input_fn = input_pipeline.make_input_fn(data_dir, records.TRAIN, config.data,
                                          train.batch_size, training=True, seed=seed)
  progress = hooks.ProgressHook(train.batch_size, plan.total_steps, model_dir,
                                steps_per_epoch=plan.steps_per_epoch)
  estimator.train(input_fn, max_steps=plan.total_steps, hooks=[progress, *extra_hooks],
                  saving_listeners=[listener])


class _EvaluationListener(tf1.train.CheckpointSaverListener):
  """Evaluates each evaluation-boundary checkpoint as soon as it is saved.

  Holds the plateau state (loaded from the model directory) and the last metrics; sets the
  training graph's rate variable after a decay.
  """

  def __init__(self, config, metadata, data_dir, model_dir, plan):
    self._config = config
    self._args = (config, metadata, data_dir, model_dir)
    self._plan = plan
    self._plateau = config.train.schedule == 'plateau'
    self._rate_setter = schedule.RateSetter()
    self.state = schedule.load_state(model_dir, config.train)
    self.metrics = {}

  def begin(self):
    if self._plateau:
      self._rate_setter.prepare()

  def after_save(self, session, global_step_value):
    rate = self.state.learning_rate
    self.evaluate_if_due(int(global_step_value))
    if self._plateau and self.state.learning_rate != rate:
      self._rate_setter.set(session, self.state.learning_rate)

  def evaluate_if_due(self, step: int) -> None:
    """Evaluates checkpoint `step` if it is a boundary (or the end) not evaluated yet."""
    plan = self._plan
    if step > self.state.last_eval_step and (step % plan.eval_every == 0 or
                                             step >= plan.total_steps):
      rate = (self.state.learning_rate if self._plateau else
              schedule.step_rate(self._config.train, plan.steps_per_epoch, step))
      self.metrics, self.state = _evaluate_and_update(*self._args, self.state, step, rate)


def _evaluate_and_update(config, metadata, data_dir, model_dir, state, step, learning_rate):
  """Evaluates checkpoint `step`, records it (trained at `learning_rate`), keeps the best and
  returns the metrics and the plateau state after it."""
  estimator = make_estimator(config, metadata, model_dir)
  start = time.time()

  def input_fn():
    return input_pipeline.make_dataset(data_dir, records.VALIDATION, config.data,
                                       config.train.batch_size, training=False)

  metrics = estimator.evaluate(input_fn, name='validation')
  metrics = {k: float(v) for k, v in metrics.items()}
  error = 1.0 - metrics['top1_accuracy']
  new_state = state.after_evaluation(error, step, config.train)
  if new_state.best_step == step:
    _keep_best(model_dir, step, metrics)
  if new_state.decays > state.decays:
    log.info('validation error has not improved for %d evaluations: learning rate %g -> %g',
             config.train.plateau_patience, state.learning_rate, new_state.learning_rate)
  schedule.save_state(model_dir, new_state)
  record = dict(step=step, time=time.time(), eval_seconds=time.time() - start,
                learning_rate=learning_rate, **metrics)
  with open(os.path.join(model_dir, HISTORY_FILE), 'a', encoding='utf-8') as f:
    f.write(json.dumps(record) + '\n')
  log.info('step %d: validation top-1 %.4f, top-5 %.4f, loss %.4f (best top-1 %.4f at step %s)',
           step, metrics['top1_accuracy'], metrics['top5_accuracy'], metrics['loss'],
           1.0 - new_state.best_error, new_state.best_step)
  return metrics, new_state


def _keep_best(model_dir, step, metrics):
  """Copies checkpoint `step` to model_dir/best/, replacing the previous best."""
  best = os.path.join(model_dir, BEST_DIR)
  tmp = best + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  prefix = os.path.join(model_dir, f'model.ckpt-{step}')
  for path in glob.glob(prefix + '.*'):
    shutil.copy2(path, tmp)
  with open(os.path.join(tmp, 'checkpoint'), 'w', encoding='utf-8') as f:
    f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n')
  with open(os.path.join(tmp, 'metrics.json'), 'w', encoding='utf-8') as f:
    json.dump(dict(step=step, **metrics), f, indent=2)
  shutil.rmtree(best, ignore_errors=True)
  os.replace(tmp, best)
