"""The learning-rate schedules: the paper's plateau (with its saved state) and fixed steps,
linear, and restarts."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import recipes, run_loop, rundir, schedule
from alexnet_tf.config import TrainConfig

CONFIG = TrainConfig(learning_rate=0.01, plateau_patience=2, max_decays=2)


def _replay(errors, config=CONFIG):
  state = schedule.PlateauState(learning_rate=config.learning_rate)
  rates = []
  for step, error in enumerate(errors, start=1):
    state = state.after_evaluation(error, step * 100, config)
    rates.append(state.learning_rate)
  return state, rates


def test_plateau_divides_by_ten_after_patience_evaluations_without_improvement():
  state, rates = _replay([0.5, 0.4, 0.41, 0.40, 0.3, 0.35, 0.36, 0.37, 0.38, 0.39])
  assert rates == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001, 0.0001,
                                 0.0001, 0.0001])
  # Two decays at most; afterwards the rate stays.
  assert state.decays == 2
  assert (state.best_error, state.best_step) == (0.3, 500)


def test_equal_error_is_not_an_improvement():
  state, rates = _replay([0.5, 0.5, 0.5])
  assert rates[-1] == pytest.approx(0.001) and state.best_step == 100


def test_state_survives_a_restart(tmp_path):
  state, _ = _replay([0.5, 0.6, 0.7, 0.4])
  rundir.save_schedule_state(str(tmp_path), state)
  assert rundir.load_schedule_state(str(tmp_path), CONFIG) == state
  assert not list(tmp_path.glob('*.tmp'))


def test_fresh_state_starts_at_the_configured_rate(tmp_path):
  fresh = dataclasses.replace(CONFIG, learning_rate=0.05)
  state = rundir.load_schedule_state(str(tmp_path), fresh)
  assert state == schedule.PlateauState(learning_rate=0.05)


def test_corrupt_state_file_is_named(tmp_path):
  (tmp_path / rundir.STATE_FILE).write_text('{"learning_rate": ')
  with pytest.raises(ValueError, match='schedule_state.json: unreadable'):
    rundir.load_schedule_state(str(tmp_path), CONFIG)


def test_piecewise_schedule():
  steps = (0, 10, 11, 20, 21, 1000)
  with tf.Graph().as_default():  # the schedule is built inside the Estimator's graph
    step = tf.compat.v1.placeholder(tf.int64, [])
    rate = schedule.piecewise(0.01, [10, 20], 0.1)(step)
    with tf.compat.v1.Session() as sess:
      rates = [sess.run(rate, {step: s}) for s in steps]
  assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


def test_plateau_rate_is_a_local_variable_set_in_the_running_session():
  with tf.Graph().as_default():
    step = tf.compat.v1.train.get_or_create_global_step()
    rate = schedule.plateau_variable(0.01)(step)
    setter = schedule.RateSetter()
    setter.prepare()
    # Not checkpointed: a resumed run takes its rate from schedule_state.json.
    assert schedule.PLATEAU_VARIABLE not in {
        v.op.name for v in tf.compat.v1.global_variables()}
    init = [tf.compat.v1.global_variables_initializer(),
            tf.compat.v1.local_variables_initializer()]
    tf.compat.v1.get_default_graph().finalize()  # the Estimator finalises before training
    with tf.compat.v1.Session() as sess:
      sess.run(init)
      before = sess.run(rate)
      setter.set(sess, 0.001)
      after = sess.run(rate)
  assert (before, after) == pytest.approx((0.01, 0.001))


def test_rate_setter_needs_the_plateau_variable():
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match='plateau_variable'):
      schedule.RateSetter().prepare()


def test_step_rate_matches_the_graph_schedule():
  config = TrainConfig(learning_rate=0.01, lr_decay_factor=0.1, step_boundaries_epochs=(1.0, 2.0))
  boundaries = schedule.step_boundaries(config, steps_per_epoch=10)
  assert boundaries == [10, 20]
  with tf.Graph().as_default():
    step = tf.compat.v1.placeholder(tf.int64, [])
    rate = schedule.piecewise(0.01, boundaries, 0.1)(step)
    with tf.compat.v1.Session() as sess:
      # The step that reaches global step s runs with the rate of global step s - 1.
      for s in (1, 10, 11, 12, 20, 21, 22, 100):
        assert schedule.step_rate(config, 10, s) == pytest.approx(sess.run(rate, {step: s - 1}))


def test_the_step_schedule_never_decays_on_a_plateau():
  state, rates = _replay([0.5, 0.5, 0.5, 0.5, 0.5], dataclasses.replace(CONFIG, schedule='step'))
  assert state.decays == 0 and rates == [CONFIG.learning_rate] * 5
  assert (state.best_error, state.best_step) == (0.5, 100)  # best/ still follows the error


def test_linear_schedule_warms_up_then_falls_to_zero_as_the_graph_computes_it():
  config = TrainConfig(learning_rate=0.02, schedule='linear', warmup_epochs=1.0, epochs=4.0)
  assert schedule.warmup_steps(config, steps_per_epoch=10) == 10
  with tf.Graph().as_default():
    step = tf.compat.v1.placeholder(tf.int64, [])
    rate = schedule.linear(0.02, 10, 40)(step)
    with tf.compat.v1.Session() as sess:
      graph = [sess.run(rate, {step: s}) for s in range(41)]
  python = [schedule.step_rate(config, 10, s + 1, total_steps=40) for s in range(41)]
  np.testing.assert_allclose(graph, python, rtol=1e-6, atol=1e-9)
  assert graph[0] == pytest.approx(0.002)  # the first update already moves the weights
  assert graph[9] == pytest.approx(0.02) and max(graph) == pytest.approx(0.02)
  assert np.all(np.diff(graph[:10]) > 0) and np.all(np.diff(graph[10:]) < 0)
  assert graph[39] == pytest.approx(0.02 / 30) and graph[40] == 0.0


def test_linear_schedule_without_warmup_starts_at_the_peak():
  assert schedule.linear_rate(0.1, 0, 100, 0) == pytest.approx(0.1)
  assert schedule.linear_rate(0.1, 0, 100, 50) == pytest.approx(0.05)


def test_the_linear_rate_needs_the_run_length():
  with pytest.raises(ValueError, match='total_steps'):
    schedule.step_rate(TrainConfig(schedule='linear'), 10, 5)


def test_warmup_must_be_shorter_than_the_run():
  with pytest.raises(ValueError, match='warmup_epochs'):
    TrainConfig(schedule='linear', warmup_epochs=5.0, epochs=5.0)


def test_restarts_warm_up_then_repeat_cosine_cycles_as_the_graph_computes_them():
  # 10 steps an epoch: 1 epoch of warm-up, then cycles of 1, 2 and 4 epochs (ends 2, 4, 8).
  config = TrainConfig(learning_rate=0.02, schedule='restarts', warmup_epochs=1.0,
                       restart_epochs=1.0, restart_mult=2.0, epochs=8.0)
  assert schedule.restart_steps(config, steps_per_epoch=10) == 10
  with tf.Graph().as_default():  # Keras' CosineDecayRestarts, behind the warm-up
    step = tf.compat.v1.placeholder(tf.int64, [])
    rate = schedule.restarts(0.02, 10, 10, 2.0)(step)
    with tf.compat.v1.Session() as sess:
      graph = np.array([sess.run(rate, {step: s}) for s in range(80)])
  python = [schedule.step_rate(config, 10, s + 1) for s in range(80)]
  np.testing.assert_allclose(graph, python, rtol=1e-5, atol=1e-8)
  assert np.all(np.diff(graph[:10]) > 0) and graph[9] == pytest.approx(0.02)
  for start, end in ((10, 20), (20, 40), (40, 80)):  # each cycle: the peak, falling to ~0
    assert graph[start] == pytest.approx(0.02)
    assert np.all(np.diff(graph[start:end]) < 0)
    assert graph[end - 1] < 0.02 * 0.03
    assert graph[(start + end) // 2] == pytest.approx(0.01)  # half-way down the cosine


def test_a_restarts_run_must_end_a_cycle():
  with pytest.raises(ValueError, match=r'cycles end at 3, 7\b'):
    TrainConfig(schedule='restarts', warmup_epochs=1.0, restart_epochs=2.0, epochs=5.0)
  TrainConfig(schedule='restarts', warmup_epochs=1.0, restart_epochs=2.0, epochs=7.0)
  # A fixed number of steps (smoke runs) is not a recipe's result: not checked.
  TrainConfig(schedule='restarts', restart_epochs=2.0, epochs=5.0, max_steps=10)
  with pytest.raises(ValueError, match='restart_mult'):
    TrainConfig(schedule='restarts', restart_mult=0.5)


def test_the_run_loop_trains_a_restarts_config_on_its_schedule():
  config = TrainConfig(learning_rate=0.02, schedule='restarts', warmup_epochs=1.0,
                       restart_epochs=2.0, epochs=7.0)
  plan = run_loop.RunPlan(steps_per_epoch=10, total_steps=70, eval_every=10)
  with tf.Graph().as_default():
    step = tf.compat.v1.placeholder(tf.int64, [])
    rate = run_loop.learning_rate_fn(config, plan, schedule.PlateauState(0.02))(step)
    with tf.compat.v1.Session() as sess:
      graph = [sess.run(rate, {step: s}) for s in range(70)]
  np.testing.assert_allclose(graph, [schedule.step_rate(config, 10, s + 1) for s in range(70)],
                             rtol=1e-5, atol=1e-8)
  assert graph[30] == pytest.approx(0.02)  # the second cycle starts at epoch 3


def test_a_cycle_ends_where_the_next_update_restarts():
  # 10 steps an epoch: warm-up to step 10, then cycles of 10, 20 and 40 steps.
  config = TrainConfig(schedule='restarts', warmup_epochs=1.0, restart_epochs=1.0, epochs=8.0)
  ends = [s for s in range(1, 81) if schedule.ends_cycle(config, 10, s)]
  assert ends == [20, 40, 80]


def test_the_long_recipes_cycles_end_on_its_epochs_in_steps():
  config = recipes.get_config('cifar10_long')
  plan = run_loop.RunPlan.make(config, num_train=45000)  # the validation split's 5,000 held out
  assert plan.steps_per_epoch == 351 and plan.total_steps == 181 * 351
  ends = schedule.cycle_end_steps(config.train, 351, plan.total_steps)
  assert ends == [13 * 351, 37 * 351, 85 * 351, 181 * 351]
  rate = lambda s: schedule.step_rate(config.train, 351, s + 1)  # of the update at step s
  for end in ends:
    assert schedule.ends_cycle(config.train, 351, end)
    assert not schedule.ends_cycle(config.train, 351, end - 1)
    assert rate(end - 1) < 1e-6 and rate(end) == pytest.approx(0.02)


@pytest.mark.parametrize('overrides, message', [
    # 353 steps an epoch: the warm-up rounds to 176 steps, the run to ceil(4412.5) = 4413.
    (dict(warmup_epochs=0.5, epochs=12.5), 'stop inside a cycle'),
    (dict(eval_every_epochs=2.0), 'must be evaluated'),  # ends at 13 and 37 epochs: odd
])
def test_a_restarts_run_whose_steps_miss_a_cycle_end_is_refused(overrides, message):
  config = recipes.get_config('cifar10_long')
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, **overrides))
  with pytest.raises(ValueError, match=message):
    run_loop.RunPlan.make(config, num_train=353 * 128)
