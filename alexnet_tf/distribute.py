"""Training past one device on TensorFlow's own engine: tf.distribute, tf.estimator and
TF_CONFIG clusters (README, "Distributed training").

  mirrored          one machine, N devices: `tf.distribute.MirroredStrategy` in the
                    Estimator's RunConfig, through the single-process loop (`run_loop`).
  parameter_server  a TF_CONFIG cluster of chief, workers, ps (and an evaluator): the classic
                    between-graph replication Estimator sets up from TF_CONFIG (no strategy
                    object; variables on the ps tasks, asynchronous updates).
  multi_worker      a TF_CONFIG cluster of chief and workers (and an evaluator):
                    `tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy`,
                    synchronous collective all-reduce.

Clusters run through `tf.estimator.train_and_evaluate`, the same command on every task. Only
the chief takes the run directory's lock and writes run.json, checkpoints, summaries and the
export; the evaluator (if the cluster lists one) evaluates new checkpoints and records them
with `run_loop.record_evaluation` (history, best/) from a `tf.estimator.Exporter`; without
one the chief evaluates the last checkpoint. Every training task reads its own shard of the
input. Batch size: mirrored and multi_worker split the global --batch-size over the replicas
(one synchronous update of the whole batch); under parameter_server every worker step is
one asynchronous update of --batch-size images.

Every replica holds the whole net on one device: the towers are built without device pins
(`tower_devices` all ''), so the strategy's replica device (or the worker's default) places
them.
"""

import contextlib
import dataclasses
import json
import logging
import os
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from alexnet_tf import estimator as estimator_lib
from alexnet_tf import export, hooks, input_pipeline, records, rundir, run_loop
from alexnet_tf.config import Config

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

NONE, MIRRORED, PARAMETER_SERVER, MULTI_WORKER = 'none', 'mirrored', 'parameter_server', \
    'multi_worker'
STRATEGIES = (NONE, MIRRORED, PARAMETER_SERVER, MULTI_WORKER)
CHIEF, WORKER, PS, EVALUATOR = 'chief', 'worker', 'ps', 'evaluator'
TF_CONFIG = 'TF_CONFIG'
# The continuous evaluation polls for a new checkpoint this often (TF's default is 600 s).
EVAL_THROTTLE_SECS = 2
# TF delays worker i by 5 (i + 1) s (up to 60) to give asynchronous training a head start
# from the chief; a worker's session already waits for the chief's initialisation, and the
# delay would leave short runs to the chief alone.
MAX_WORKER_DELAY_SECS = 0
JOINED_DIR = '.joined'  # in the model dir: the workers' marks for hooks.JoinBarrierHook


@dataclasses.dataclass(frozen=True)
class Cluster:
  """This task's view of TF_CONFIG: the jobs' addresses and which task this one is."""
  jobs: Mapping[str, Tuple[str, ...]]
  task_type: str
  task_index: int

  @classmethod
  def from_tf_config(cls, text: str) -> 'Cluster':
    """Parses TF_CONFIG's JSON; ValueError naming what is wrong."""
    try:
      raw = json.loads(text)
      jobs = {name: tuple(addresses) for name, addresses in raw['cluster'].items()}
      task_type, task_index = raw['task']['type'], int(raw['task']['index'])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f'{TF_CONFIG}: expected JSON {{"cluster": {{job: [host:port, ...]}}, '
                       f'"task": {{"type": job, "index": i}}}}, got {text!r} ({e})') from None
    if len(jobs.get(CHIEF, ())) != 1:
      raise ValueError(f'{TF_CONFIG}: the cluster needs exactly one "{CHIEF}" task, got '
                       f'{list(jobs.get(CHIEF, ()))}')
    if len(jobs.get(EVALUATOR, ())) > 1:
      raise ValueError(f'{TF_CONFIG}: at most one "{EVALUATOR}" task, got {jobs[EVALUATOR]}')
    unknown = set(jobs) - {CHIEF, WORKER, PS, EVALUATOR}
    if unknown:
      raise ValueError(f'{TF_CONFIG}: unknown jobs {sorted(unknown)}; use '
                       f'{CHIEF}, {WORKER}, {PS} and {EVALUATOR}')
    if task_type not in jobs or not 0 <= task_index < len(jobs[task_type]):
      raise ValueError(f'{TF_CONFIG}: task {task_type}:{task_index} is not in the cluster '
                       f'{dict(jobs)}')
    return cls(jobs, task_type, task_index)

  @property
  def is_chief(self) -> bool:
    return self.task_type == CHIEF

  @property
  def num_workers(self) -> int:
    """The training tasks: the chief and the workers."""
    return len(self.jobs[CHIEF]) + len(self.jobs.get(WORKER, ()))

  @property
  def worker_index(self) -> int:
    """This training task's place among them (TF's order: chief 0, worker i is i + 1)."""
    return 0 if self.is_chief else self.task_index + 1

  @property
  def has_evaluator(self) -> bool:
    return bool(self.jobs.get(EVALUATOR))

  @property
  def name(self) -> str:
    return f'{self.task_type}:{self.task_index}'


@dataclasses.dataclass(frozen=True)
class Distribution:
  """How a run is spread: the strategy name, a mirrored run's devices, a cluster's task."""
  strategy: str = NONE
  replica_devices: Tuple[str, ...] = ()  # mirrored only; () = every GPU
  cluster: Optional[Cluster] = None  # parameter_server and multi_worker


def make_distribution(strategy: str, replica_devices: Sequence[str] = (),
                      environ: Mapping[str, str] = os.environ) -> Distribution:
  """The Distribution of the flags and TF_CONFIG; ValueError for combinations TF refuses
  or that make no sense (a cluster without TF_CONFIG, TF_CONFIG without a cluster strategy)."""
  if strategy not in STRATEGIES:
    raise ValueError(f'--strategy {strategy!r}: choose one of {STRATEGIES}')
  text = environ.get(TF_CONFIG, '').strip()
  if replica_devices and strategy != MIRRORED:
    raise ValueError('--replica-devices is for --strategy mirrored')
  if strategy in (NONE, MIRRORED):
    if text and _has_cluster(text):
      raise ValueError(f'{TF_CONFIG} describes a cluster, but --strategy {strategy} trains on '
                       f'one machine: use --strategy {PARAMETER_SERVER} or {MULTI_WORKER}, '
                       f'or unset {TF_CONFIG}')
    return Distribution(strategy, tuple(replica_devices))
  if not text:
    raise ValueError(f'--strategy {strategy} needs the cluster in {TF_CONFIG} (see README, '
                     f'"Distributed training")')
  cluster = Cluster.from_tf_config(text)
  has_ps = bool(cluster.jobs.get(PS))
  if strategy == PARAMETER_SERVER and not has_ps:
    raise ValueError(f'--strategy {PARAMETER_SERVER}: {TF_CONFIG} lists no "{PS}" task')
  if strategy == MULTI_WORKER and has_ps:
    raise ValueError(f'--strategy {MULTI_WORKER} all-reduces between the workers and has no '
                     f'"{PS}" tasks; remove them from {TF_CONFIG} or use {PARAMETER_SERVER}')
  return Distribution(strategy, (), cluster)


def _has_cluster(text: str) -> bool:
  try:
    return bool(json.loads(text).get('cluster'))
  except (ValueError, AttributeError):
    return True  # unreadable: refuse rather than let RunConfig guess


def check_config(config: Config, distribution: Distribution) -> None:
  """ValueError for what a cluster cannot run: the plateau schedule (its decision is taken
  by the evaluator after the workers' graphs are built, and they have no way to hear it)."""
  if distribution.cluster is not None and config.train.schedule == 'plateau':
    raise ValueError(f'the plateau schedule needs the validation error in the training '
                     f'process, which a cluster ({distribution.strategy}) evaluates in another '
                     f'task: use --schedule step (with --decay-epochs)')
  if config.train.batch_size % max(1, _replicas(distribution)):
    raise ValueError(f'--batch-size {config.train.batch_size} does not split evenly over '
                     f'{_replicas(distribution)} replicas')


def _replicas(distribution: Distribution) -> int:
  if distribution.strategy == MIRRORED:
    return len(distribution.replica_devices) or len(tf.config.list_logical_devices('GPU'))
  if distribution.strategy == MULTI_WORKER:
    return distribution.cluster.num_workers  # one replica per worker (its one device)
  return 1


def replica_config(config: Config) -> Config:
  """`config` with the towers unpinned: each replica builds the whole net on its device."""
  model = dataclasses.replace(config.model, tower_devices=('',) * config.model.num_towers)
  return dataclasses.replace(config, model=model)


def train_and_evaluate(config: Config, data_dir: str, model_dir: str,
                       export_dir: Optional[str], distribution: Distribution,
                       extra_hooks: Sequence[tf1.train.SessionRunHook] = ()) -> Dict[str, float]:
  """`run_loop.train_and_evaluate` under `distribution`: this task's part of the run.

  Returns the metrics of the last evaluation this task knows ({} on workers and ps).
  A ps task never returns: it serves the variables until whoever started it stops it.
  """
  check_config(config, distribution)
  if distribution.strategy == NONE:
    return run_loop.train_and_evaluate(config, data_dir, model_dir, export_dir, extra_hooks)
  config = replica_config(config)
  if distribution.strategy == MIRRORED:
    devices = distribution.replica_devices or None
    if devices is None and not tf.config.list_logical_devices('GPU'):
      raise ValueError('--strategy mirrored found no GPU: name the devices with '
                       '--replica-devices, e.g. /cpu:0,/cpu:1')
    # Built in graph mode, as the Estimator uses it: eagerly it would place tensors on the
    # devices at once, and logical CPUs exist only in the Estimator's sessions
    # (estimator.session_config), not in the eager context.
    with tf.Graph().as_default():
      strategy = tf.distribute.MirroredStrategy(devices=devices)
    log.info('mirrored over %s: %d images per replica of the global batch of %d',
             ', '.join(strategy.extended.worker_devices), config.train.batch_size //
             strategy.num_replicas_in_sync, config.train.batch_size)
    session = estimator_lib.session_config(config.model, distribution.replica_devices)
    return run_loop.train_and_evaluate(config, data_dir, model_dir, export_dir, extra_hooks,
                                       strategy=strategy, session=session)
  return _ClusterTask(config, data_dir, model_dir, export_dir, distribution).run(extra_hooks)


class _ClusterTask:
  """One task of a TF_CONFIG cluster under tf.estimator.train_and_evaluate."""

  def __init__(self, config, data_dir, model_dir, export_dir, distribution):
    self.config, self.data_dir, self.model_dir = config, data_dir, model_dir
    self.export_dir = export_dir
    self.strategy_name = distribution.strategy
    self.cluster: Cluster = distribution.cluster

  def run(self, extra_hooks) -> Dict[str, float]:
    cluster = self.cluster
    log.info('%s: task %s of a cluster of %s', self.strategy_name, cluster.name,
             {job: len(tasks) for job, tasks in cluster.jobs.items()})
    if cluster.task_type == PS:
      # What train_and_evaluate does on a ps task (it needs no model, data or run directory).
      server = tf.distribute.Server(tf.train.ClusterSpec(dict(cluster.jobs)), job_name=PS,
                                    task_index=cluster.task_index,
                                    config=self._session_config())
      log.info('ps task: serving the variables at %s until this process is stopped',
               cluster.jobs[PS][cluster.task_index])
      server.join()
      return {}  # not reached: a ps task serves forever
    source = input_pipeline.open_dataset(self.data_dir, self.config.data, training=True)
    plan = run_loop.RunPlan.make(self.config, source.metadata.counts[records.TRAIN])
    os.makedirs(self.model_dir, exist_ok=True)
    # Only the chief writes the run directory; the others must not wait on its lock.
    with rundir.lock(self.model_dir) if cluster.is_chief else contextlib.nullcontext():
      if cluster.is_chief:
        rundir.save_run(self.model_dir, self.config, source)
      step = rundir.latest_step(self.model_dir)
      estimator = self._estimator(source, plan, step)
      tf.estimator.train_and_evaluate(estimator, *self._specs(source, plan, step, extra_hooks))
      if cluster.task_type == EVALUATOR:
        history = rundir.read_history(self.model_dir)
        return history[-1] if history else {}
      if not cluster.is_chief:
        return {}
      return self._finish(source, plan)

  def _finish(self, source, plan) -> Dict[str, float]:
    """The chief after training: the stall check, the final evaluation when no evaluator
    makes it, and the export."""
    reached = rundir.latest_step(self.model_dir)
    if reached < plan.total_steps:
      raise run_loop.StalledRunError(
          f'{self.data_dir}: training stopped at step {reached} of {plan.total_steps} because '
          f'the training split delivered no more batches (empty or unreadable shards?)')
    metrics = {}
    with _single_process():
      if not self.cluster.has_evaluator:
        metrics = run_loop.plain_metrics(run_loop.validate(self.config, source, self.model_dir))
        run_loop.record_evaluation(self.model_dir, self.config.train, plan, reached, metrics)
      if self.export_dir:
        log.info('exported SavedModel to %s',
                 export.export_run(self.model_dir, self.export_dir, 'latest'))
    return metrics

  def _seed(self, step: int) -> Optional[int]:
    seed = self.config.train.seed
    # Each task its own shuffle and dropout masks; +step: a resumed run must not replay.
    return None if seed is None else seed + step + 1_000_003 * self.cluster.worker_index

  def _estimator(self, source, plan, step: int) -> tf.estimator.Estimator:
    # The evaluator is no part of the all-reduce: a strategy there would try to join it.
    strategy = (tf1.distribute.experimental.MultiWorkerMirroredStrategy()
                if self.strategy_name == MULTI_WORKER and self.cluster.task_type != EVALUATOR
                else None)
    learning_rate = run_loop.learning_rate_fn(
        self.config.train, plan, rundir.load_schedule_state(self.model_dir, self.config.train))
    return estimator_lib.make_estimator(
        self.config, source.metadata, self.model_dir, learning_rate, self._seed(step),
        save_every=plan.eval_every, train_distribute=strategy,
        session=self._session_config(), max_worker_delay_secs=MAX_WORKER_DELAY_SECS)

  def _session_config(self) -> tf1.ConfigProto:
    """Our session config plus the device filters TF gives between-graph tasks when it
    makes the session config itself: a worker talks to the ps tasks and itself only, so it
    neither waits for nor fails with the other workers."""
    session = estimator_lib.session_config(self.config.model)
    if self.strategy_name != PARAMETER_SERVER:
      return session  # the collective strategy sets its own
    filters = {CHIEF: ['/job:ps', '/job:chief'],
               WORKER: ['/job:ps', f'/job:worker/task:{self.cluster.task_index}'],
               PS: ['/job:ps', '/job:worker', '/job:chief']}.get(self.cluster.task_type)
    if filters:
      session.device_filters.extend(filters)
    return session

  def _specs(self, source, plan, step, extra_hooks):
    config, cluster = self.config, self.cluster
    shard = (cluster.num_workers, cluster.worker_index)
    train_input = input_pipeline.make_distributed_input_fn(
        source, records.TRAIN, config.data, config.train.batch_size, True,
        seed=self._seed(step), shard=shard)
    eval_input = input_pipeline.make_distributed_input_fn(
        source, records.VALIDATION, config.data, config.train.batch_size, False)
    train_hooks = [
        # Summaries only from the chief: one writer per directory.
        hooks.ProgressHook(config.train.batch_size, plan.total_steps,
                           self.model_dir if cluster.is_chief else None,
                           description=cluster.name),
        hooks.TaskStepsHook(cluster.name), *extra_hooks]
    if self.strategy_name == PARAMETER_SERVER and cluster.jobs.get(WORKER):
      workers = [f'{WORKER}:{i}' for i in range(len(cluster.jobs[WORKER]))]
      train_hooks.append(hooks.JoinBarrierHook(os.path.join(self.model_dir, JOINED_DIR),
                                               workers, None if cluster.is_chief else
                                               cluster.name))
    exporter = RecordingExporter(self.model_dir, config.train, plan)
    return (tf.estimator.TrainSpec(train_input, max_steps=plan.total_steps, hooks=train_hooks),
            tf.estimator.EvalSpec(eval_input, steps=None, name='validation',
                                  exporters=[exporter], start_delay_secs=0,
                                  throttle_secs=EVAL_THROTTLE_SECS))


@contextlib.contextmanager
def _single_process() -> Iterator[None]:
  """TF_CONFIG hidden from the RunConfigs built in the block: the chief's own evaluation
  and export are one-process work, not another task of the cluster."""
  saved = os.environ.pop(TF_CONFIG, None)
  try:
    yield
  finally:
    if saved is not None:
      os.environ[TF_CONFIG] = saved


class RecordingExporter(tf.estimator.Exporter):
  """train_and_evaluate's hook after each evaluation (on the evaluator): records it with
  `run_loop.record_evaluation` (history.jsonl, best/, the schedule state). It exports
  nothing; the chief exports at the end."""

  def __init__(self, model_dir: str, train_config, plan: run_loop.RunPlan):
    self._model_dir, self._train_config, self._plan = model_dir, train_config, plan

  @property
  def name(self) -> str:
    return 'record_evaluation'

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    del estimator, export_path, is_the_final_export
    # The step in the file's name, not eval_result's global step: under asynchronous
    # updates the variable saved may already be a step or two past the name's.
    step = int(checkpoint_path.rsplit('-', 1)[1])
    if step > 0:  # the chief's starting checkpoint of a new run is no result
      run_loop.record_evaluation(self._model_dir, self._train_config, self._plan, step,
                                 {k: v for k, v in eval_result.items()
                                  if k != tf1.GraphKeys.GLOBAL_STEP})
    return None
