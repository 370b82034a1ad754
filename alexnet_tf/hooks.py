"""Session hooks of the training loop: a progress bar, throughput, and the NaN guard; a
cluster task's step count and the asynchronous cluster's start line."""

import contextlib
import logging
import math
import os
import time
from typing import Optional, Sequence

import tensorflow as tf
from tqdm import tqdm

tf1 = tf.compat.v1
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


class ProgressHook(tf1.train.SessionRunHook):
  """A tqdm bar with step, loss, learning rate and images/s; stops on a non-finite loss.

  Also writes `images_per_sec` to TensorBoard every `summary_every` steps. The loss and
  learning rate are fetched with the train op, so the hook adds no extra session run.
  """

  def __init__(self, batch_size, total_steps, model_dir=None, summary_every=100,
               description='train', steps_per_epoch=None):
    """`steps_per_epoch`: when given, the bar is labelled with the current epoch instead."""
    self._batch_size = batch_size
    self._total_steps = total_steps
    self._model_dir = model_dir
    self._summary_every = summary_every
    self._description = description
    self._steps_per_epoch = steps_per_epoch

  def _label(self, step):
    if not self._steps_per_epoch:
      return self._description
    epochs = math.ceil(self._total_steps / self._steps_per_epoch)
    return f'epoch {min(step // self._steps_per_epoch + 1, epochs)}/{epochs}'

  def begin(self):
    graph = tf1.get_default_graph()
    self._fetches = {
        'step': tf1.train.get_global_step(),
        'loss': graph.get_tensor_by_name('total_loss:0'),
        'lr': graph.get_tensor_by_name('learning_rate:0'),
    }
    self._writer = (tf1.summary.FileWriterCache.get(self._model_dir)
                    if self._model_dir else None)

  def after_create_session(self, session, coord):
    self._start_step = int(session.run(self._fetches['step']))
    self._bar = tqdm(total=self._total_steps, initial=self._start_step, unit='step',
                     desc=self._label(self._start_step), dynamic_ncols=True,
                     mininterval=1.0)
    self._last_time, self._last_step = time.time(), self._start_step

  def before_run(self, run_context):
    return tf1.train.SessionRunArgs(self._fetches)

  def after_run(self, run_context, run_values):
    values = run_values.results
    # The global step read with the train op is the value before this step's update.
    step = int(values['step']) + 1
    loss = float(values['loss'])
    if not math.isfinite(loss):
      self._bar.close()
      raise NonFiniteLossError(
          f'the training loss became {loss} at step {step} (learning rate {values["lr"]:g}); '
          f'the run is stopped. Lower --learning-rate or resume from an earlier checkpoint.')
    self._bar.update(step - self._bar.n)
    now = time.time()
    elapsed = now - self._last_time
    if elapsed >= 2.0 or step % self._summary_every == 0:
      images_per_sec = (step - self._last_step) * self._batch_size / max(elapsed, 1e-9)
      self._bar.set_description(self._label(step), refresh=False)
      self._bar.set_postfix(loss=f'{loss:.4f}', lr=f'{values["lr"]:.2g}',
                            img_s=f'{images_per_sec:.0f}', refresh=False)
      if self._writer is not None and step % self._summary_every == 0:
        self._writer.add_summary(tf1.Summary(value=[
            tf1.Summary.Value(tag='images_per_sec', simple_value=images_per_sec)]), step)
      self._last_time, self._last_step = now, step

  def end(self, session):
    self._bar.close()


class TaskStepsHook(tf1.train.SessionRunHook):
  """Counts the training steps this task ran and logs them at the end, with the global
  steps it saw first and last and the global steps per second after its first `warmup`
  steps (in a cluster the global step counts every task's updates)."""

  def __init__(self, task: str, warmup: int = 10):
    self._task = task
    self._warmup = warmup
    self.steps = 0
    self._first = self._last = 0
    self._mark = None  # (time, global step) after the warm-up
    self.global_steps_per_sec = None

  def begin(self):
    self._global_step = tf1.train.get_global_step()

  def before_run(self, run_context):
    return tf1.train.SessionRunArgs(self._global_step)

  def after_run(self, run_context, run_values):
    step = int(run_values.results) + 1  # the value read is the one before this update
    if self.steps == 0:
      self._first = step - 1
    self.steps += 1
    self._last = step
    if self.steps == self._warmup:
      self._mark = (time.perf_counter(), step)
    elif self._mark is not None:
      seconds = time.perf_counter() - self._mark[0]
      self.global_steps_per_sec = (step - self._mark[1]) / max(seconds, 1e-9)

  def end(self, session):
    span = f' (global step {self._first} -> {self._last})' if self.steps else ''
    rate = ('' if self.global_steps_per_sec is None else
            f'; {self.global_steps_per_sec:.3f} global steps/s after its first {self._warmup}')
    log.info('task %s ran %d training steps%s%s', self._task, self.steps, span, rate)


class JoinBarrierHook(tf1.train.SessionRunHook):
  """Between-graph replication's start line: the chief waits (at most `timeout` s) until
  every worker has a session before its first step; each worker says so by a file in
  `directory` (the model dir, which every task of a cluster shares).

  Without it the chief of an asynchronous cluster starts alone, and a worker whose first
  check for the chief's initialisation came too early sleeps 30 s (TF's SessionManager) and
  may join a short run after its end. The chief clears the files in begin(), before its
  session exists, and a worker's session exists only after the chief's: none is stale.
  """

  def __init__(self, directory: str, worker_names: Sequence[str], me: Optional[str],
               timeout: float = 120.0):
    """`me`: this worker's name, None on the chief."""
    self._directory = directory
    self._workers = list(worker_names)
    self._me = me
    self._timeout = timeout

  def _path(self, name):
    return os.path.join(self._directory, name.replace(':', '-'))

  def begin(self):
    if self._me is None:
      os.makedirs(self._directory, exist_ok=True)
      for name in self._workers:
        with contextlib.suppress(FileNotFoundError):
          os.remove(self._path(name))

  def after_create_session(self, session, coord):
    if self._me is not None:
      with open(self._path(self._me), 'w', encoding='utf-8') as f:
        f.write(f'{os.getpid()}\n')
      return
    log.info('chief: waiting for %s to join (at most %.0f s)', ', '.join(self._workers),
             self._timeout)
    deadline = time.monotonic() + self._timeout
    missing = self._workers
    while missing and time.monotonic() < deadline:
      time.sleep(0.2)
      missing = [n for n in self._workers if not os.path.exists(self._path(n))]
    if missing:
      log.warning('chief: %s did not join within %.0f s; training without them',
                  ', '.join(missing), self._timeout)
    else:
      log.info('chief: all workers joined')
