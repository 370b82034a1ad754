"""Learning-rate schedules of paper section 5.

`plateau`: "divide the learning rate by 10 when the validation error rate stopped improving
with the current learning rate". Its state (`PlateauState`) is saved in the run directory
after each evaluation (`rundir.save_schedule_state`), so a killed run continues with the rate
it had; in the training graph the rate is a variable that the run loop sets after a decay.
`step`: a fixed piecewise-constant schedule on the global step.
`linear`: a rate rising linearly from 0 over the warm-up, then falling linearly to 0 at the
last step: the shape budgeted-training studies find best when the number of steps is known
(Li et al., ICLR 2020). tensorflow-addons' cyclical rates do not serve here: they are
symmetric triangles between two rates, so a cycle cannot rise for one epoch and fall for
fifteen, and its end returns to the starting rate instead of 0.
`restarts`: the same warm-up, then cosine cycles from the peak to 0, each `restart_mult` times
longer than the last (SGDR, Loshchilov & Hutter, ICLR 2017): every cycle's end is a finished
run, so a long run has a result at 13, 37, 85, ... epochs and can be extended by a cycle. The
graph uses Keras' `CosineDecayRestarts`.
"""

import dataclasses
import math
from typing import Callable, List, Optional, Sequence

import tensorflow as tf

from alexnet_tf.config import TrainConfig, cycle_ends

LearningRateFn = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class PlateauState:
  """Where the plateau schedule stands after the evaluation at `last_eval_step`."""
  learning_rate: float
  best_error: Optional[float] = None  # lowest validation top-1 error seen
  best_step: Optional[int] = None
  evals_without_improvement: int = 0
  decays: int = 0
  last_eval_step: int = 0

  def after_evaluation(self, error: float, step: int, config: TrainConfig) -> 'PlateauState':
    """The state after a validation top-1 `error` measured at global step `step`."""
    if self.best_error is None or error < self.best_error:
      return dataclasses.replace(self, best_error=error, best_step=step,
                                 evals_without_improvement=0, last_eval_step=step)
    waited = self.evals_without_improvement + 1
    # Only the plateau schedule decays here; the step schedule's rate follows the step.
    if (config.schedule == 'plateau' and waited >= config.plateau_patience and
        self.decays < config.max_decays):
      return dataclasses.replace(self, learning_rate=self.learning_rate * config.lr_decay_factor,
                                 decays=self.decays + 1, evals_without_improvement=0,
                                 last_eval_step=step)
    return dataclasses.replace(self, evals_without_improvement=waited, last_eval_step=step)


def constant(learning_rate: float) -> LearningRateFn:
  """A fixed rate (benchmarks, and training runs too short to evaluate)."""
  return lambda global_step: tf.constant(learning_rate, tf.float32)


PLATEAU_VARIABLE = 'plateau_learning_rate'


def plateau_variable(learning_rate: float) -> LearningRateFn:
  """The plateau schedule in the training graph: a variable the run loop sets after a decay.

  A local (not checkpointed) float32 scalar named PLATEAU_VARIABLE, initialised to
  `learning_rate` (the saved state's rate, so a resumed run starts where it was);
  `RateSetter` changes it in the running session, so a decay needs no new graph.
  """
  def fn(global_step):
    del global_step  # the rate changes with the validation error, not the step
    return tf.compat.v1.get_variable(
        PLATEAU_VARIABLE, initializer=tf.constant(learning_rate, tf.float32), trainable=False,
        collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES]).read_value()
  return fn


class RateSetter:
  """Sets the PLATEAU_VARIABLE of the default graph: `prepare()` before the graph is
  finalised, then `set(session, rate)`."""

  def prepare(self) -> None:
    matches = [v for v in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOCAL_VARIABLES)
               if v.op.name == PLATEAU_VARIABLE]
    if len(matches) != 1:
      raise ValueError(f'the training graph has {len(matches)} variables named '
                       f'{PLATEAU_VARIABLE!r}; build it with schedule.plateau_variable')
    self._value = tf.compat.v1.placeholder(tf.float32, [], name='new_learning_rate')
    self._assign = matches[0].assign(self._value)

  def set(self, session, learning_rate: float) -> None:
    session.run(self._assign, {self._value: learning_rate})


def step_boundaries(config: TrainConfig, steps_per_epoch: int) -> List[int]:
  """The global steps after which the fixed schedule divides the rate."""
  return [round(b * steps_per_epoch) for b in config.step_boundaries_epochs]


def step_rate(config: TrainConfig, steps_per_epoch: int, step: int,
              total_steps: Optional[int] = None) -> float:
  """The rate of a step-driven schedule ('step', 'restarts' or 'linear', which needs
  `total_steps`) that trained the step reaching global step `step`, as the graph computes it
  from the global step before the update."""
  if config.schedule == 'restarts':
    return restarts_rate(config.learning_rate, warmup_steps(config, steps_per_epoch),
                         restart_steps(config, steps_per_epoch), config.restart_mult, step - 1)
  if config.schedule == 'linear':
    if total_steps is None:
      raise ValueError("the 'linear' schedule's rate needs the run's total_steps")
    return linear_rate(config.learning_rate, warmup_steps(config, steps_per_epoch),
                       total_steps, step - 1)
  decays = sum(step - 1 > b for b in step_boundaries(config, steps_per_epoch))
  return config.learning_rate * config.lr_decay_factor ** decays


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
  return round(config.warmup_epochs * steps_per_epoch)


def warmup_rate(peak: float, warmup: int, step: int) -> float:
  """The warm-up of 'linear' and 'restarts': the step-th update uses peak * (step + 1) /
  warmup (never 0, so the first update moves)."""
  return peak * (step + 1) / warmup


def _graph_warmup(peak: float, warmup: int, step: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
  """`warmup_rate` in the graph for float32 `step` < warmup, `after` from there on."""
  return tf.where(step < warmup, peak * (step + 1.0) / max(warmup, 1), after)


def linear_rate(peak: float, warmup: int, total: int, step: int) -> float:
  """The 'linear' schedule at global step `step` (the graph's formula, in Python): the
  step-th update of `total` uses `warmup_rate` while warming up, then
  peak * (total - step) / (total - warmup)."""
  if step < warmup:
    return warmup_rate(peak, warmup, step)
  return peak * max(total - step, 0) / max(total - warmup, 1)


def linear(peak: float, warmup: int, total: int) -> LearningRateFn:
  """The 'linear' schedule in the graph: `linear_rate` of the global step."""
  def fn(global_step):
    step = tf.cast(global_step, tf.float32)
    falling = peak * tf.maximum(float(total) - step, 0.0) / max(total - warmup, 1)
    return _graph_warmup(peak, warmup, step, falling)
  return fn


def restart_steps(config: TrainConfig, steps_per_epoch: int) -> int:
  """The first cosine cycle's steps."""
  return max(round(config.restart_epochs * steps_per_epoch), 1)


def restarts_rate(peak: float, warmup: int, first_cycle: int, mult: float, step: int) -> float:
  """The 'restarts' schedule at global step `step` (the graph's formula, in Python):
  `warmup_rate`, then peak * (1 + cos(pi * t)) / 2, t the fraction of its cycle done; the
  cycles after warm-up last first_cycle, first_cycle * mult, ... steps."""
  if step < warmup:
    return warmup_rate(peak, warmup, step)
  done, length = float(step - warmup), float(first_cycle)
  while done >= length:  # at most a few dozen cycles: a closed form would round at the ends
    done -= length
    length *= mult
  return peak * 0.5 * (1.0 + math.cos(math.pi * done / length))


def cycle_end_steps(config: TrainConfig, steps_per_epoch: int, upto: int) -> List[int]:
  """The global steps at which 'restarts' cycles end, up to the first at or past `upto`: the
  checkpoints whose next update is a restart (`config.cycle_ends` on the rounded steps)."""
  ends = cycle_ends(restart_steps(config, steps_per_epoch), config.restart_mult,
                    warmup_steps(config, steps_per_epoch), upto)
  return [math.ceil(e - 1e-9) for e in ends]


def ends_cycle(config: TrainConfig, steps_per_epoch: int, step: int) -> bool:
  """Whether a 'restarts' cycle ends at global step `step`."""
  return step in cycle_end_steps(config, steps_per_epoch, step)


def restarts(peak: float, warmup: int, first_cycle: int, mult: float) -> LearningRateFn:
  """The 'restarts' schedule in the graph: `restarts_rate` of the global step."""
  cosine = tf.keras.optimizers.schedules.CosineDecayRestarts(
      peak, first_cycle, t_mul=mult, m_mul=1.0, alpha=0.0)

  def fn(global_step):
    step = tf.cast(global_step, tf.float32)
    return _graph_warmup(peak, warmup, step, cosine(tf.maximum(step - warmup, 0.0)))
  return fn


def piecewise(learning_rate: float, boundaries_steps: Sequence[int],
              decay_factor: float) -> LearningRateFn:
  """The fixed schedule: `learning_rate * decay_factor**i` after the i-th boundary."""
  values = [learning_rate * decay_factor ** i for i in range(len(boundaries_steps) + 1)]

  def fn(global_step):
    if not boundaries_steps:
      return tf.constant(learning_rate, tf.float32)
    return tf.compat.v1.train.piecewise_constant(
        tf.cast(global_step, tf.int64), [int(b) for b in boundaries_steps], values)
  return fn
