"""Session hooks of the training loop: a progress bar, throughput, and the NaN guard."""

import math
import time

import tensorflow as tf
from tqdm import tqdm

tf1 = tf.compat.v1


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
