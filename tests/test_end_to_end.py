"""End to end on real CIFAR-10 JPEGs: train, resume, evaluate, export, serve, predict.

Uses the `cifar10_subset_records` fixture (240 training and 60 validation images of the real
CIFAR-10 training set, converted in folder mode) and the CLI entry points as users run them.
"""

import base64
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import estimator as estimator_lib
from alexnet_tf import evaluate, export, input_pipeline, kernels, predict, records, rundir, train

tf1 = tf.compat.v1
HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 16  # 240 training images: 15 steps per epoch


def train_args(data_dir, model_dir, *extra):
  # fp32 pinned: --precision auto would give bf16 on a bf16-capable CI machine, and these
  # tests compare exported (fp32) logits with the run's own to 1e-4 (bf16 runs:
  # test_precision.py).
  return ['--dataset', 'cifar10', '--data-dir', str(data_dir), '--model-dir', str(model_dir),
          '--batch-size', str(BATCH), '--seed', '3', '--precision', 'fp32', *extra]


@pytest.fixture(scope='module')
def trained(cifar10_subset_records, tmp_path_factory):
  """A run of 6 steps with one evaluation and an export; returns its model dir."""
  model_dir = tmp_path_factory.mktemp('run') / 'model'
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '6')) == 0
  return model_dir


def _schedule_state(model_dir):
  return rundir.load_schedule_state(str(model_dir), rundir.load_run(str(model_dir)).config.train)


def test_training_writes_checkpoints_history_best_and_export(trained, cifar10_subset_records):
  assert rundir.latest_step(str(trained)) == 6
  history = [json.loads(l) for l in (trained / rundir.HISTORY_FILE).read_text().splitlines()]
  assert [h['step'] for h in history] == [6]
  assert 0.0 <= history[0]['top1_accuracy'] <= history[0]['top5_accuracy'] <= 1.0
  assert tf1.train.latest_checkpoint(str(trained / rundir.BEST_DIR)).endswith('model.ckpt-6')
  state = _schedule_state(trained)
  assert state.last_eval_step == 6 and state.best_step == 6
  saved = export.latest_export(str(trained / 'export'))
  assert os.path.isfile(os.path.join(saved, 'saved_model.pb'))
  # The training mean (pixel mode: the mean image) travels with the run and the export.
  dataset_mean = records.read_mean_image(str(cifar10_subset_records))
  np.testing.assert_array_equal(rundir.training_mean(str(trained)), dataset_mean)
  np.testing.assert_array_equal(export.read_exported_mean(saved), dataset_mean)
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
  history = json.loads((trained / rundir.HISTORY_FILE).read_text().splitlines()[-1])
  assert results[evaluate.CENTRE]['top1_error'] == pytest.approx(1 - history['top1_accuracy'])
  # The per-class rows (tfa's confusion counts) add up to the overall top-1 error.
  classes = rundir.load_run(str(trained)).metadata.classes
  for name in (evaluate.CENTRE, evaluate.TEN_CROP):
    rows = results[name]['per_class']
    assert [r['class'] for r in rows] == list(classes)
    assert sum(r['examples'] for r in rows) == 60
    wrong = sum(r['top1_error'] * r['examples'] for r in rows)
    assert wrong / 60 == pytest.approx(results[name]['top1_error'])
    assert all(0.0 <= r['f1'] <= 1.0 for r in rows)
  assert '| per class | examples | top-1 error | F1 |' in printed
  assert len(history['per_class_f1']) == len(classes)  # validation history keeps them too


def test_exporting_never_builds_the_lrn_kernel(trained, tmp_path, monkeypatch):
  """The run trained with the fused kernel; its export gets the portable LRN and must not
  compile (or load) the kernel library to get it."""
  assert rundir.load_run(str(trained)).config.model.lrn_impl == 'fused'
  calls = []

  def forbidden(*args, **kwargs):
    calls.append(args)
    raise AssertionError('exporting built or loaded the LRN kernel')

  cache = tmp_path / 'kernel_cache'
  cache.mkdir()
  monkeypatch.setenv(kernels.CACHE_ENV, str(cache))
  monkeypatch.setenv(kernels.COMPILER_ENV, str(tmp_path / 'no-such-compiler'))
  monkeypatch.setattr(kernels, 'load', forbidden)
  monkeypatch.setattr(kernels, 'library_path', forbidden)
  assert export.main(['--model-dir', str(trained), '--export-dir', str(tmp_path / 'e')]) == 0
  assert not calls and not list(cache.iterdir())
  saved = export.latest_export(str(tmp_path / 'e'))
  graph = tf.saved_model.load(saved, tags=['serve']).signatures[
      export.SERVING_SIGNATURE].graph.as_graph_def()
  ops = {node.op for node in graph.node} | {
      node.op for f in graph.library.function for node in f.node_def}
  assert not any(op.startswith('Alexnet') for op in ops)


@pytest.fixture(scope='module')
def other_mean_copy(cifar10_subset_records, tmp_path_factory):
  """The same dataset whose mean_image.npy holds a different array."""
  copy = tmp_path_factory.mktemp('other_mean') / 'data'
  shutil.copytree(cifar10_subset_records, copy)
  mean = np.load(copy / records.MEAN_IMAGE_FILE)
  np.save(copy / records.MEAN_IMAGE_FILE, (255.0 - mean).astype(mean.dtype))
  return copy


@pytest.mark.parametrize('command', ['export', 'evaluate'])
def test_a_dataset_with_other_classes_is_refused_in_one_line(trained, cifar10_subset_records,
                                                             tmp_path, caplog, command):
  five = tmp_path / 'five_classes'
  shutil.copytree(cifar10_subset_records, five)
  metadata = records.read_metadata(str(five))
  records.write_metadata(str(five), dataclasses.replace(metadata,
                                                        classes=metadata.classes[:5]))
  main = export.main if command == 'export' else evaluate.main
  extra = ['--export-dir', str(tmp_path / 'e')] if command == 'export' else []
  assert main(['--model-dir', str(trained), '--data-dir', str(five), *extra]) == 1
  assert f'{five} has 5 classes, but' in caplog.text and 'was trained for 10' in caplog.text
  assert not (tmp_path / 'e').exists()


def test_bad_serving_requests_are_refused_with_a_message(trained, cifar10_subset_records):
  model = tf.saved_model.load(export.latest_export(str(trained / 'export')), tags=['serve'])
  serve = model.signatures[export.SERVING_SIGNATURE]
  with pytest.raises(tf.errors.InvalidArgumentError, match='the request holds no images'):
    serve(**{export.IMAGE_BYTES: tf.constant([], tf.string)})
  # A PNG whose header claims 20000x20000 (a decompression bomb): refused before decoding.
  jpeg = _validation_examples(cifar10_subset_records, 1)[0][0]
  pixels = tf.io.decode_jpeg(jpeg).numpy()
  png = bytearray(tf.io.encode_png(pixels).numpy())
  png[16:24] = (20000).to_bytes(4, 'big') * 2
  for request in ([bytes(png)], [jpeg, bytes(png)]):  # alone, or in a batch
    with pytest.raises(tf.errors.InvalidArgumentError, match='the serving limit'):
      serve(**{export.IMAGE_BYTES: tf.constant(request)})


def test_training_on_empty_shards_fails_and_exports_nothing(cifar10_subset_records, tmp_path,
                                                           caplog):
  data = tmp_path / 'empty_train'
  shutil.copytree(cifar10_subset_records, data)
  for shard in records.shard_files(str(data), records.TRAIN):
    open(shard, 'wb').close()  # 0 bytes: a shard that looks present but holds nothing
  model_dir = tmp_path / 'run'
  assert train.main(train_args(data, model_dir, '--max-steps', '3')) == 1
  assert 'training stopped at step 0 of 3' in caplog.text
  assert not (model_dir / 'export').exists()


def _overall(result):
  """An evaluation result without its per-class rows."""
  return {k: v for k, v in result.items() if k != 'per_class'}


def test_checkpoint_evaluation_on_other_data_uses_the_training_mean(trained,
                                                                     cifar10_subset_records,
                                                                     other_mean_copy):
  # The copy's own mean does change what the model sees...
  assert not np.allclose(_evaluation_path_logits(trained, cifar10_subset_records, 8),
                         _evaluation_path_logits(trained, other_mean_copy, 8))
  # ...but evaluation subtracts the run's training mean, whatever the data directory holds.
  on_training_dir = evaluate.evaluate_checkpoint(str(trained))
  on_copy = evaluate.evaluate_checkpoint(str(trained), data_dir=str(other_mean_copy))
  for name in (evaluate.CENTRE, evaluate.TEN_CROP):
    # The cross-entropy makes this sensitive: 6 steps leave most predictions at one class.
    assert _overall(on_copy[name]) == pytest.approx(_overall(on_training_dir[name]), rel=1e-6)
    assert on_copy[name]['per_class'] == on_training_dir[name]['per_class']


def test_saved_model_evaluation_on_other_data_uses_the_exported_mean(trained,
                                                                      cifar10_subset_records,
                                                                      other_mean_copy):
  saved = export.latest_export(str(trained / 'export'))
  on_training_dir = evaluate.evaluate_saved_model(saved, str(cifar10_subset_records))
  on_copy = evaluate.evaluate_saved_model(saved, str(other_mean_copy))
  for name in (evaluate.CENTRE, evaluate.TEN_CROP):
    assert _overall(on_copy[name]) == pytest.approx(_overall(on_training_dir[name]), rel=1e-6)
    assert on_copy[name]['per_class'] == on_training_dir[name]['per_class']


def _validation_examples(data_dir, count):
  """The first `count` validation records: (encoded bytes, label)."""
  files = records.shard_files(str(data_dir), records.VALIDATION)
  dataset = tf.data.TFRecordDataset(files).map(input_pipeline.parse_example).take(count)
  return [(e.numpy(), int(l)) for e, l in dataset]


def _evaluation_path_logits(model_dir, data_dir, count):
  """Logits of the Estimator on the first `count` validation images (the eval input_fn)."""
  run = rundir.load_run(str(model_dir))
  estimator = estimator_lib.make_estimator(run.config, run.metadata, str(model_dir))
  source = input_pipeline.open_dataset(str(data_dir), run.config.data)
  input_fn = input_pipeline.make_input_fn(source, records.VALIDATION, run.config.data, count,
                                          training=False)
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
  classes = rundir.load_run(str(trained)).metadata.classes
  assert [names[0] for names in three['top5_class_names']] == [
      classes[c] for c in three['classes']]
  np.testing.assert_allclose(one['logits'][0], three['logits'][0], rtol=1e-5, atol=1e-6)
  # The served model computes what the evaluation path computes on the same image.
  expected = _evaluation_path_logits(trained, cifar10_subset_records, 3)
  np.testing.assert_allclose(np.array(three['logits']), expected, rtol=1e-4, atol=1e-5)

  assert 'not a JPEG or PNG file' in result['garbage_error']


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
  assert names <= set(rundir.load_run(str(trained)).metadata.classes)
  assert str(garbage) not in out


def test_restart_continues_where_the_run_stopped(cifar10_subset_records, tmp_path):
  model_dir = tmp_path / 'model'
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '4',
                               '--no-export')) == 0
  assert rundir.latest_step(str(model_dir)) == 4
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '8',
                               '--no-export')) == 0
  history = [json.loads(l) for l in (model_dir / rundir.HISTORY_FILE).read_text().splitlines()]
  assert [h['step'] for h in history] == [4, 8]
  assert rundir.latest_step(str(model_dir)) == 8


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
    while rundir.latest_step(str(model_dir)) < 6 and time.time() < deadline:
      if process.poll() is not None:
        pytest.fail(f'training exited early with {process.returncode}')
      time.sleep(0.2)
    killed_at = rundir.latest_step(str(model_dir))
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  assert killed_at == 6
  state_before = _schedule_state(model_dir)
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  # A checkpoint may land between the last look and the kill, so >= rather than ==.
  resumed_from = int(result.stderr.split('resuming from step ')[1].split()[0])
  assert resumed_from == killed_at
  assert rundir.latest_step(str(model_dir)) == 12
  history = [json.loads(l) for l in (model_dir / rundir.HISTORY_FILE).read_text().splitlines()]
  steps = [h['step'] for h in history]
  # Step 6 is evaluated once: before the kill, or after the restart if the kill lost it.
  assert steps == [6, 12]
  state_after = _schedule_state(model_dir)
  assert state_before.last_eval_step in (0, 6) and state_after.last_eval_step == 12


def test_batch_normalization_trains_exports_and_serves_its_moving_statistics(
    cifar10_subset_records, tmp_path):
  model_dir = tmp_path / 'bn'
  assert train.main(train_args(cifar10_subset_records, model_dir, '--max-steps', '4',
                               '--normalization', 'batch')) == 0
  reader = tf1.train.load_checkpoint(tf1.train.latest_checkpoint(str(model_dir)))
  moving = reader.get_tensor('alexnet/tower1/conv3/batch_norm/moving_mean')
  assert np.abs(moving).max() > 0  # the Estimator's train op ran the updates
  saved = export.latest_export(str(model_dir / 'export'))
  examples = _validation_examples(cifar10_subset_records, 3)
  serve = tf.saved_model.load(saved).signatures['serving_default']
  served = serve(image_bytes=tf.constant([data for data, _ in examples]))['logits'].numpy()
  # Serving normalises with the moving statistics, as evaluation does, not the batch's.
  expected = _evaluation_path_logits(model_dir, cifar10_subset_records, 3)
  np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
