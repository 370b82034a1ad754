"""The run directory: the lock, the saved training mean, and the per-evaluation bookkeeping."""

import dataclasses
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_tf import recipes
from alexnet_tf import input_pipeline, records, rundir, run_loop, train

CONFIG = recipes.get_config('cifar10')


def test_the_lock_is_exclusive_and_released(tmp_path):
  with rundir.lock(str(tmp_path)):
    with pytest.raises(rundir.RunDirLockedError, match=f'{tmp_path} is in use.*another'):
      with rundir.lock(str(tmp_path)):
        pass
  with rundir.lock(str(tmp_path)):  # released at the end of the block
    pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from alexnet_tf import rundir\n'
       'with rundir.lock(sys.argv[1]):\n  print("held", flush=True); time.sleep(600)',
       str(tmp_path)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(rundir.RunDirLockedError, match=f'pid {holder.pid}'):
      with rundir.lock(str(tmp_path)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert (tmp_path / rundir.LOCK_FILE).exists()  # the file stays; the flock went with its holder
  with rundir.lock(str(tmp_path)):
    pass


def test_a_second_training_on_a_locked_model_dir_fails_at_once(cifar10_subset_records, tmp_path,
                                                                caplog):
  model_dir = tmp_path / 'model'
  model_dir.mkdir()
  start = time.time()
  with rundir.lock(str(model_dir)), caplog.at_level(logging.ERROR, logger='alexnet_tf.train'):
    assert train.main(['--data-dir', str(cifar10_subset_records), '--model-dir',
                       str(model_dir), '--max-steps', '1', '--no-export']) == 1
  assert time.time() - start < 60
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert len(errors) == 1 and str(model_dir) in errors[0] and 'another' in errors[0]
  assert '\n' not in errors[0]
  assert not (model_dir / rundir.RUN_FILE).exists()  # nothing was written


def test_the_training_mean_is_saved_with_the_run(cifar10_subset_records, tmp_path, caplog):
  data_dir = str(cifar10_subset_records)

  def save_run(config):
    source = input_pipeline.open_dataset(data_dir, config.data, training=True)
    rundir.save_run(str(tmp_path), config, source)

  save_run(CONFIG)
  expected = records.read_mean_image(data_dir)
  np.testing.assert_array_equal(rundir.training_mean(str(tmp_path)), expected)
  assert not list(tmp_path.glob('*.tmp'))
  # An older run directory, without the file: the mean of the dataset its run.json names.
  (tmp_path / rundir.MEAN_FILE).unlink()
  with caplog.at_level(logging.INFO, logger='alexnet_tf.rundir'):
    np.testing.assert_array_equal(rundir.training_mean(str(tmp_path)), expected)
  assert data_dir in caplog.text
  # 'rgb' saves the [3] colour mean; 'none' saves nothing (and removes an earlier file).
  rgb = dataclasses.replace(CONFIG, data=dataclasses.replace(CONFIG.data, subtract_mean='rgb'))
  save_run(rgb)
  assert rundir.training_mean(str(tmp_path)).shape == (3,)
  none = dataclasses.replace(CONFIG, data=dataclasses.replace(CONFIG.data, subtract_mean='none'))
  save_run(none)
  assert not (tmp_path / rundir.MEAN_FILE).exists()
  assert rundir.training_mean(str(tmp_path)) is None


def test_record_evaluation_keeps_history_state_and_is_idempotent(tmp_path):
  train_config = dataclasses.replace(CONFIG.train, schedule='plateau', plateau_patience=1)
  plan = run_loop.RunPlan(steps_per_epoch=10, total_steps=100, eval_every=10)
  model_dir = str(tmp_path)
  for step in (10, 20):  # best/ copies the checkpoint files: fake ones suffice here
    (tmp_path / f'model.ckpt-{step}.index').write_text('')

  def metrics(top1):
    return {'top1_accuracy': np.float32(top1), 'top5_accuracy': 0.9, 'loss': 1.0}

  state = run_loop.record_evaluation(model_dir, train_config, plan, 10, metrics(0.5), 2.0)
  assert state.best_step == 10 and state.last_eval_step == 10
  assert (tmp_path / rundir.BEST_DIR / 'model.ckpt-10.index').exists()
  state = run_loop.record_evaluation(model_dir, train_config, plan, 20, metrics(0.4), 2.0)
  assert state.decays == 1 and state.learning_rate == pytest.approx(CONFIG.train.learning_rate *
                                                                    train_config.lr_decay_factor)
  assert not (tmp_path / rundir.BEST_DIR / 'model.ckpt-20.index').exists()
  assert run_loop.record_evaluation(model_dir, train_config, plan, 20, metrics(0.9)) == state
  history = rundir.read_history(model_dir)
  assert [h['step'] for h in history] == [10, 20]
  assert [h['learning_rate'] for h in history] == [CONFIG.train.learning_rate] * 2
  assert rundir.load_schedule_state(model_dir, train_config) == state


def test_record_evaluation_under_the_step_schedule_stores_the_rate_in_use(tmp_path, caplog):
  train_config = dataclasses.replace(CONFIG.train, schedule='step', plateau_patience=1,
                                     step_boundaries_epochs=(2.0,))
  plan = run_loop.RunPlan(steps_per_epoch=10, total_steps=40, eval_every=10)
  (tmp_path / 'model.ckpt-10.index').write_text('')
  caplog.set_level(logging.INFO)
  for step, top1 in ((10, 0.5), (20, 0.4), (30, 0.3)):  # never better than step 10
    state = run_loop.record_evaluation(str(tmp_path), train_config, plan, step,
                                       {'top1_accuracy': top1, 'top5_accuracy': 0.9,
                                        'loss': 1.0})
  assert state.decays == 0 and 'learning rate' not in caplog.text
  # After step 30 training runs past the epoch-2 boundary: the stored rate is the one in use.
  assert state.learning_rate == pytest.approx(train_config.learning_rate *
                                              train_config.lr_decay_factor)
  rates = [h['learning_rate'] for h in rundir.read_history(str(tmp_path))]
  assert rates == pytest.approx([train_config.learning_rate] * 2 +
                                [train_config.learning_rate * train_config.lr_decay_factor])


def test_record_evaluation_keeps_the_end_of_each_restarts_cycle(tmp_path):
  train_config = dataclasses.replace(CONFIG.train, schedule='restarts', warmup_epochs=1.0,
                                     restart_epochs=1.0, epochs=4.0)
  plan = run_loop.RunPlan(steps_per_epoch=10, total_steps=40, eval_every=10)
  for step in (10, 20, 30, 40):  # the copies take the checkpoint files: fake ones suffice
    (tmp_path / f'model.ckpt-{step}.index').write_text('')
    run_loop.record_evaluation(str(tmp_path), train_config, plan, step,
                               {'top1_accuracy': 0.5, 'top5_accuracy': 0.9, 'loss': 1.0})
  cycles = tmp_path / rundir.CYCLES_DIR
  assert sorted(p.name for p in cycles.iterdir()) == ['epoch-2', 'epoch-4']  # 1 + 1, + 2
  assert (cycles / 'epoch-4' / 'model.ckpt-40.index').exists()
  assert rundir.resolve_checkpoint(str(tmp_path), str(cycles / 'epoch-2')).endswith(
      'model.ckpt-20')
  # A directory inside the run, as `evaluate --checkpoint cycles/epoch-4` names it.
  assert rundir.resolve_checkpoint(str(tmp_path), 'cycles/epoch-4').endswith('model.ckpt-40')
