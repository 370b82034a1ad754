"""The training loop: Estimator training with periodic evaluation, the plateau schedule,
the best checkpoint, resumption and the final export.

One `Estimator.train` call runs the whole run in one session, so the input pipeline (and its
cache of decoded images), the graph and the session are built once, not once per epoch. Every
evaluation boundary is a checkpoint; right after it is written, `_EvaluationListener`
evaluates it on the validation split (in its own graph and session) and hands the metrics to
`record_evaluation` (history, best/, plateau state, all in the run directory: `rundir`); a
decay sets the plateau rate, a variable of the training graph, in place. The run directory is
locked for the whole run (`rundir.lock`): a second training process on it fails at once.

A run killed at any point and started again with the same command continues from its newest
checkpoint with the schedule state it had; a checkpoint whose evaluation was lost to the kill
is evaluated first (the Estimator re-saves the starting checkpoint, which reaches the
listener like any other).

`strategy` (a MirroredStrategy over one machine's devices, `distribute`) runs this same loop
with the strategy in the Estimator's RunConfig. Clusters (TF_CONFIG) run through
`tf.estimator.train_and_evaluate` instead (`distribute.train_and_evaluate`), which forbids
saving listeners under multi-worker strategies and evaluates in its own task: there a
`tf.estimator.Exporter` calls the same `record_evaluation`, so history, best/ and the
schedule state stay one implementation.
"""

import dataclasses
import logging
import math
import os
import time
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import estimator as estimator_lib
from alexnet_tf import export, finetune, hooks, input_pipeline, records, rundir, schedule
from alexnet_tf.config import Config

tf1 = tf.compat.v1
log = logging.getLogger(__name__)


class StalledRunError(RuntimeError):
  """Training ended before its last step: the training input ran dry."""


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
    eval_every = min(max(1, round(train.eval_every_epochs * steps_per_epoch)), total)
    if train.schedule == 'restarts' and train.max_steps is None:
      _check_cycle_ends(train, steps_per_epoch, total, eval_every)
    return cls(steps_per_epoch, total, eval_every)


def _check_cycle_ends(train: config_lib.TrainConfig, steps_per_epoch: int, total: int,
                      eval_every: int) -> None:
  """ValueError unless the run stops at a cycle's end and every end is a checkpoint:
  TrainConfig checks the epochs, but the steps are rounded."""
  ends = schedule.cycle_end_steps(train, steps_per_epoch, total)
  listed = ', '.join(map(str, ends))
  if ends[-1] != total:
    raise ValueError(f'the restarts schedule\'s cycles end at steps {listed} of '
                     f'{steps_per_epoch} an epoch, and the run\'s {train.epochs:g} epochs are '
                     f'{total} steps: it would stop inside a cycle; choose whole epochs')
  if any(e % eval_every for e in ends):
    raise ValueError(f'the restarts schedule\'s cycles end at steps {listed}, and the run '
                     f'evaluates every {eval_every} steps: every cycle\'s end must be '
                     f'evaluated and kept; choose --eval-every to divide them (e.g. 1)')


def train_and_evaluate(config: Config, data_dir: str, model_dir: str,
                       export_dir: Optional[str] = None,
                       extra_hooks: Sequence[tf1.train.SessionRunHook] = (),
                       strategy: Optional[tf.distribute.Strategy] = None,
                       session: Optional[tf1.ConfigProto] = None) -> Dict[str, float]:
  """Trains `config` on `data_dir` into `model_dir`, resuming what is there.

  Returns the metrics of the last evaluation. Exports a SavedModel to `export_dir` at the
  end when given. `extra_hooks` join the training session (a profiler, a timer).
  `strategy` and `session` go to `estimator.make_estimator` (a one-machine strategy).

  Raises:
    rundir.RunDirLockedError: another process is training into `model_dir`.
    StalledRunError: the training input ended before the last step (nothing is exported).
  """
  # Checked once, here: fail now, not after an epoch of training.
  # Fine-tuning: the inherited preprocessing and mean, and the restore, checked here too.
  source = (finetune.open_dataset(data_dir, config) if config.train.init_from else
            input_pipeline.open_dataset(data_dir, config.data, training=True))
  warm_start = finetune.warm_start_settings(config)
  for split in (records.TRAIN, records.VALIDATION):
    records.shard_files(data_dir, split)
  metadata = source.metadata
  plan = RunPlan.make(config, metadata.counts[records.TRAIN])
  os.makedirs(model_dir, exist_ok=True)
  with rundir.lock(model_dir):
    rundir.save_run(model_dir, config, source)
    log.info('%s: %d training examples, %d steps per epoch, %d steps in all, evaluating every '
             '%d steps; model dir %s', metadata.name, metadata.counts[records.TRAIN],
             plan.steps_per_epoch, plan.total_steps, plan.eval_every, model_dir)
    listener = _EvaluationListener(config, source, model_dir, plan, strategy, session)
    step = rundir.latest_step(model_dir)
    if step:
      log.info('resuming from step %d (learning rate %g)', step, listener.state.learning_rate)
    if step < plan.total_steps:
      _train(config, source, model_dir, plan, listener, step, extra_hooks, warm_start,
             strategy, session)
      reached = rundir.latest_step(model_dir)
      if reached < plan.total_steps:  # the input ended: nothing to evaluate or export
        raise StalledRunError(
            f'{data_dir}: training stopped at step {reached} of {plan.total_steps} because '
            f'the training split delivered no more batches (empty or unreadable shards?)')
    listener.evaluate_if_due(rundir.latest_step(model_dir))  # a finished run's lost last eval
    if export_dir:
      log.info('exported SavedModel to %s', export.export_run(model_dir, export_dir, 'latest'))
  return listener.metrics


def learning_rate_fn(train: config_lib.TrainConfig, plan: RunPlan,
                     state: schedule.PlateauState) -> schedule.LearningRateFn:
  """The training graph's rate: the plateau variable at `state`'s rate, or the steps'."""
  if train.schedule == 'plateau':
    return schedule.plateau_variable(state.learning_rate)
  if train.schedule == 'restarts':
    return schedule.restarts(train.learning_rate,
                             schedule.warmup_steps(train, plan.steps_per_epoch),
                             schedule.restart_steps(train, plan.steps_per_epoch),
                             train.restart_mult)
  if train.schedule == 'linear':
    return schedule.linear(train.learning_rate,
                           schedule.warmup_steps(train, plan.steps_per_epoch), plan.total_steps)
  return schedule.piecewise(train.learning_rate,  # 'step' (TrainConfig knows no others)
                            schedule.step_boundaries(train, plan.steps_per_epoch),
                            train.lr_decay_factor)


def _train(config, source, model_dir, plan, listener, step, extra_hooks, warm_start, strategy,
           session):
  """Trains from `step` to the end of the run in one session (warm-started at step 0)."""
  train = config.train
  # Seeded by the starting step: a resumed run must not replay the shuffle and dropout masks
  # it already saw.
  seed = None if train.seed is None else train.seed + step
  # Checkpoints land on evaluation boundaries, where the schedule is decided.
  estimator = estimator_lib.make_estimator(config, source.metadata, model_dir,
                                           learning_rate_fn(train, plan, listener.state),
                                           seed, save_every=plan.eval_every,
                                           warm_start=warm_start, train_distribute=strategy,
                                           session=session)
  if strategy is None:
    input_fn = input_pipeline.make_input_fn(source, records.TRAIN, config.data,
                                            train.batch_size, training=True, seed=seed)
  else:  # per-replica batches of the global batch_size
    input_fn = input_pipeline.make_distributed_input_fn(source, records.TRAIN, config.data,
                                                        train.batch_size, True, seed=seed)
  progress = hooks.ProgressHook(train.batch_size, plan.total_steps, model_dir,
                                steps_per_epoch=plan.steps_per_epoch)
  estimator.train(input_fn, max_steps=plan.total_steps, hooks=[progress, *extra_hooks],
                  saving_listeners=[listener])


def record_evaluation(model_dir: str, train_config: config_lib.TrainConfig, plan: RunPlan,
                      step: int, metrics: Mapping[str, float],
                      eval_seconds: Optional[float] = None) -> schedule.PlateauState:
  """The bookkeeping after the validation of checkpoint `step`: the plateau state update,
  best/ when it is the best so far, cycles/epoch-N/ when it ends a 'restarts' cycle, and its
  history line; returns the new plateau state.

  `metrics` is what `Estimator.evaluate` returns (top1_accuracy, top5_accuracy, loss, ...).
  The state is read from and written to the run directory, so any caller can do this (the
  listener here, an Exporter under train_and_evaluate); a step already recorded is ignored.
  """
  metrics = plain_metrics(metrics)
  state = rundir.load_schedule_state(model_dir, train_config)
  if step <= state.last_eval_step:
    return state
  plateau = train_config.schedule == 'plateau'
  # The rate that trained the steps up to `step`: before this evaluation's decision.
  rate = (state.learning_rate if plateau else
          schedule.step_rate(train_config, plan.steps_per_epoch, step, plan.total_steps))
  new_state = state.after_evaluation(1.0 - metrics['top1_accuracy'], step, train_config)
  if not plateau:  # the state holds the rate in use, which is the step's for the others
    new_state = dataclasses.replace(new_state, learning_rate=schedule.step_rate(
        train_config, plan.steps_per_epoch, step + 1, plan.total_steps))
  if new_state.best_step == step:
    rundir.keep_best(model_dir, step, metrics)
  if train_config.schedule == 'restarts' and schedule.ends_cycle(train_config,
                                                                   plan.steps_per_epoch, step):
    log.info('a cycle of the restarts schedule ended: checkpoint %d kept in %s', step,
             rundir.keep_cycle_end(model_dir, step, step / plan.steps_per_epoch, metrics))
  if new_state.decays > state.decays:
    log.info('validation error has not improved for %d evaluations: learning rate %g -> %g',
             train_config.plateau_patience, state.learning_rate, new_state.learning_rate)
  rundir.save_schedule_state(model_dir, new_state)
  rundir.append_history(model_dir, dict(step=step, time=time.time(), eval_seconds=eval_seconds,
                                        learning_rate=rate, **metrics))
  log.info('step %d: validation top-1 %.4f, top-5 %.4f, loss %.4f (best top-1 %.4f at step %s)',
           step, metrics['top1_accuracy'], metrics['top5_accuracy'], metrics['loss'],
           1.0 - new_state.best_error, new_state.best_step)
  return new_state


def plain_metrics(metrics: Mapping[str, object]) -> Dict[str, object]:
  """`Estimator.evaluate`'s NumPy values as JSON-ready floats and (per-class) lists."""
  return {k: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist() for k, v in metrics.items()}


def validate(config, source, model_dir, strategy=None, session=None) -> Dict[str, float]:
  """The validation metrics of the newest checkpoint in `model_dir` (under `strategy`)."""
  estimator = estimator_lib.make_estimator(config, source.metadata, model_dir,
                                           eval_distribute=strategy, session=session)
  if strategy is not None:
    input_fn = input_pipeline.make_distributed_input_fn(
        source, records.VALIDATION, config.data, config.train.batch_size, False)
    return estimator.evaluate(input_fn, name='validation')

  def input_fn():
    return input_pipeline.make_dataset(source, records.VALIDATION, config.data,
                                       config.train.batch_size, training=False)

  return estimator.evaluate(input_fn, name='validation')


class _EvaluationListener(tf1.train.CheckpointSaverListener):
  """Evaluates each evaluation-boundary checkpoint as soon as it is saved.

  Holds the plateau state (loaded from the model directory) and the last metrics; sets the
  training graph's rate variable after a decay.
  """

  def __init__(self, config, source, model_dir, plan, strategy=None, session=None):
    self._args = (config, source, model_dir, strategy, session)
    self._train_config = config.train
    self._model_dir = model_dir
    self._plan = plan
    self._plateau = config.train.schedule == 'plateau'
    self._rate_setter = schedule.RateSetter()
    self.state = rundir.load_schedule_state(model_dir, config.train)
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
      start = time.time()
      metrics = validate(*self._args)
      self.state = record_evaluation(self._model_dir, self._train_config, plan, step, metrics,
                                     time.time() - start)
      self.metrics = plain_metrics(metrics)
