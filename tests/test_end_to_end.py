"""End to end on real CIFAR-10 JPEGs: train, resume, evaluate, export, serve, predict.

Uses the `cifar10_subset_records` fixture (240 training and 60 validation images of the real
CIFAR-10 training set, converted in folder mode) and the CLI entry points as users run them.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import evaluate, export, input_pipeline, predict, records, run_loop, schedule
from alexnet_tf import train

tf1 = tf.compat.v1
HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 16  # 240 training images: 15 steps per epoch


def train_args(data_dir, model_dir, *extra):
  return ['--dataset', 'cifar10', '--data-dir', str(data_dir), '--model-dir', str(model_dir),
          '--batch-size', str(BATCH), '--seed', '3', *extra]


@pytest.fixture(scope='module')
def trained(cifar10_subset_records, tmp_path_factory):
  """A run of 6 steps with one evaluation and an export; returns its model dir."""
  model_dir = tmp_path_factory.mktemp('run') / 'model'
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '6')) == 0
  return model_dir


def test_training_writes_checkpoints_history_best_and_export(trained):
  assert run_loop.latest_step(str(trained)) == 6
  history = [json.loads(l) for l in (trained / run_loop.HISTORY_FILE).read_text().splitlines()]
  assert [h['step'] for h in history] == [6]
  assert 0.0 <= history[0]['top1_accuracy'] <= history[0]['top5_accuracy'] <= 1.0
  assert tf1.train.latest_checkpoint(str(trained / run_loop.BEST_DIR)).endswith('model.ckpt-6')
  state = schedule.load_state(str(trained), run_loop.load_run(str(trained)).config.train)
  assert state.last_eval_step == 6 and state.best_step == 6
  saved = export.latest_export(str(trained / 'export'))
  assert os.path.isfile(os.path.join(saved, 'saved_model.pb'))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(trained))


def test_evaluate_cli_writes_centre_and_ten_crop_table(trained, capsys):
  output = trained.parent / 'eval.json'
  assert evaluate.main(['--model-dir', str(trained), '--output', str(output)]) == 0
  printed = capsys.readouterr().out
  assert '| centre crop |' in printed and '| ten crop |' in printed
  results = json.loads(output.read_text())
  for name in (evaluate.CENTRE, evaluate.TEN_CROP):
    assert results[name]['examples'] == 60
    assert 0.0 <= results[name]['top5_error'] <= results[name]['top1_error'] <= 1.0
  # The centre-crop numbers are the run's own last validation numbers.
  history = json.loads((trained / run_loop.HISTORY_FILE).read_text().splitlines()[-1])
  assert results[evaluate.CENTRE]['top1_error'] == pytest.approx(1 - history['top1_accuracy'])


def _validation_examples(data_dir, count):
  """The first `count` validation records: (encoded bytes, label)."""
  files = records.shard_files(str(data_dir), records.VALIDATION)
  dataset = tf.data.TFRecordDataset(files).map(input_pipeline.parse_example).take(count)
  return [(e.numpy(), int(l)) for e, l in dataset]


def _evaluation_path_logits(model_dir, data_dir, count):
  """Logits of the Estimator on the first `count` validation images (the eval input_fn)."""
  run = run_loop.load_run(str(model_dir))
  estimator = run_loop.make_estimator(run.config, run.metadata, str(model_dir))
  input_fn = input_pipeline.make_input_fn(str(data_dir), records.VALIDATION, run.config.data,
                                          count, training=False)
  predictions = estimator.predict(input_fn, yield_single_examples=False)
  return next(predictions)['logits'][:count]


def test_serving_contract_in_a_fresh_process(trained, cifar10_subset_records, tmp_path):
  saved = export.latest_export(str(trained / 'export'))
  examples = _validation_examples(cifar10_subset_records, 3)
  # A REST body as a client sends it: base64 text in JSON, one batch of 1 and one of 3.
  instances = [{'b64': base64.b64encode(data).decode('ascii')} for data, _ in examples]
  request = tmp_path / 'request.json'
  request.write_text(json.dumps({'batches': [instances[:1], instances]}))
  result_path = tmp_path / 'result.json'
  subprocess.run([sys.executable, os.path.join(HERE, 'serving_client.py'), saved,
                  str(request), str(result_path)], check=True, timeout=300)
  result = json.loads(result_path.read_text())

  serving = result['signatures']['serving_default']
  assert serving['inputs'] == {'image_bytes': ['string', [None]]}
  assert serving['outputs']['classes'] == ['int64', [None]]
  assert serving['outputs']['probabilities'] == ['float32', [None, 10]]
  assert serving['outputs']['top5_classes'] == ['int64', [None, 5]]
  assert serving['outputs']['top5_class_names'] == ['string', [None, 5]]
  floats = result['signatures'][export.FLOAT_SERVING_SIGNATURE]
  assert floats['inputs'] == {'images': ['float32', [None, 32, 32, 3]]}

  one, three = result['responses']
  assert len(one['classes']) == 1 and len(three['classes']) == 3
  probabilities = np.array(three['probabilities'])
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(three['classes'], probabilities.argmax(axis=1))
  classes = run_loop.load_run(str(trained)).metadata.classes
  assert [names[0] for names in three['top5_class_names']] == [
      classes[c] for c in three['classes']]
  np.testing.assert_allclose(one['logits'][0], three['logits'][0], rtol=1e-5, atol=1e-6)
  # The served model computes what the evaluation path computes on the same image.
  expected = _evaluation_path_logits(trained, cifar10_subset_records, 3)
  np.testing.assert_allclose(np.array(three['logits']), expected, rtol=1e-4, atol=1e-5)

  assert 'Unknown image file format' in result['garbage_error']


def test_predict_prints_top5_and_names_a_bad_file(trained, cifar10_jpeg_subset, tmp_path, capsys):
  image = sorted((cifar10_jpeg_subset / 'train' / 'cat').iterdir())[0]
  garbage = tmp_path / 'broken.jpg'
  garbage.write_bytes(b'\xff\xd8 not really a jpeg')
  code = predict.main(['--saved-model', str(trained / 'export'), str(image), str(garbage)])
  out = capsys.readouterr().out
  assert code == 1  # one file failed
  assert out.splitlines()[0] == str(image)
  lines = out.splitlines()[1:6]
  probabilities = [float(l.split('%')[0]) for l in lines]
  assert probabilities == sorted(probabilities, reverse=True)
  names = {l.split('%')[1].strip() for l in lines}
  assert names <= set(run_loop.load_run(str(trained)).metadata.classes)
  assert str(garbage) not in out


def test_restart_continues_where_the_run_stopped(cifar10_subset_records, tmp_path):
  model_dir = tmp_path / 'model'
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '4',
                               '--no-export')) == 0
  assert run_loop.latest_step(str(model_dir)) == 4
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '8',
                               '--no-export')) == 0
  history = [json.loads(l) for l in (model_dir / run_loop.HISTORY_FILE).read_text().splitlines()]
  assert [h['step'] for h in history] == [4, 8]
  assert run_loop.latest_step(str(model_dir)) == 8


def test_kill_9_then_same_command_resumes_from_the_last_checkpoint(cifar10_subset_records,
                                                                  tmp_path):
  model_dir = tmp_path / 'model'
  # Checkpoints and evaluations every 0.4 epoch = 6 steps; 12 steps in all.
  command = [sys.executable, '-m', 'alexnet_tf.train',
             *train_args(cifar10_subset_records, model_dir, '--max-steps', '12',
                         '--eval-every', '0.4', '--no-export')]
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while run_loop.latest_step(str(model_dir)) < 6 and time.time() < deadline:
      if process.poll() is not None:
        pytest.fail(f'training exited early with {process.returncode}')
      time.sleep(0.2)
    killed_at = run_loop.latest_step(str(model_dir))
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  assert killed_at == 6
  state_before = schedule.load_state(str(model_dir), run_loop.load_run(str(model_dir)).config.train)
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  # A checkpoint may land between the last look and the kill, so >= rather than ==.
  resumed_from = int(result.stderr.split('resuming from step ')[1].split()[0])
  assert resumed_from == killed_at
  assert run_loop.latest_step(str(model_dir)) == 12
  history = [json.loads(l) for l in (model_dir / run_loop.HISTORY_FILE).read_text().splitlines()]
  steps = [h['step'] for h in history]
  # Step 6 is evaluated once: before the kill, or after the restart if the kill lost it.
  assert steps == [6, 12]
  state_after = schedule.load_state(str(model_dir), run_loop.load_run(str(model_dir)).config.train)
  assert state_before.last_eval_step in (0, 6) and state_after.last_eval_step == 12
