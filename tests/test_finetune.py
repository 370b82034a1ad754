"""Fine-tuning (`--init-from`): restore, freeze, rate scale, inherited preprocessing, mismatch
errors and resume, on a tiny project run trained on the CIFAR-10 fixture data (10 classes)
and fine-tuned on 3 of its classes.

The model_fn tests check the optimiser's side on one batch in memory; the others run the
training entry point as a user does.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf import estimator as estimator_lib
from alexnet_tf import export, finetune, input_pipeline, records, rundir, run_loop, schedule
from alexnet_tf import ablations, train
from alexnet_tf import model_fn as mf
from alexnet_tf.convert import folder

tf1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
BATCH = 8
TARGET_CLASSES = ('cat', 'dog', 'ship')
CONV = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')


@pytest.fixture(scope='module')
def source_run(cifar10_subset_records, tmp_path_factory):
  """A 2-step run on the 10-class fixture data: the weights to fine-tune from."""
  model_dir = tmp_path_factory.mktemp('source') / 'run'
  assert train.main(['--dataset', 'cifar10', '--data-dir', str(cifar10_subset_records),
                     '--model-dir', str(model_dir), '--batch-size', '16', '--max-steps', '2',
                     '--seed', '3', '--no-export']) == 0
  return model_dir


@pytest.fixture(scope='module')
def moved_source(source_run, tmp_path_factory):
  """`source_run` copied elsewhere, its dataset gone (as for imported weights): fine-tuning
  needs only run.json, the checkpoint and train_mean.npy."""
  copy = tmp_path_factory.mktemp('moved') / 'run'
  shutil.copytree(source_run, copy)
  raw = json.loads((copy / rundir.RUN_FILE).read_text())
  raw['data_dir'] = str(copy / 'no_such_dataset')
  (copy / rundir.RUN_FILE).write_text(json.dumps(raw))
  return copy


def _convert_target(jpeg_root, output, resize=0):
  tree = output.parent / f'{output.name}_jpeg'
  for name in TARGET_CLASSES:
    os.makedirs(tree, exist_ok=True)
    os.symlink(jpeg_root / 'train' / name, tree / name)
  folder.convert(str(tree), str(output), validation_fraction=0.2, workers=1, resize=resize,
                 progress=False)
  return output


@pytest.fixture(scope='module')
def target_records(cifar10_jpeg_subset, tmp_path_factory):
  """3 of the classes at 32x32: 72 training and 18 validation images."""
  return _convert_target(cifar10_jpeg_subset, tmp_path_factory.mktemp('target') / 'data')


def finetune_args(data_dir, model_dir, init_from, *extra, exported=False):
  return ['--dataset', 'cifar10', '--data-dir', str(data_dir), '--model-dir', str(model_dir),
          '--batch-size', str(BATCH), '--seed', '5', '--init-from', str(init_from), *extra,
          *([] if exported else ['--no-export'])]


def _checkpoint(path):
  reader = tf.train.load_checkpoint(str(path))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize('trainable, frozen, exported', [
    ('fc8', CONV + ('fc6', 'fc7'), True),
    ('fc6,fc7,fc8', CONV, False),
    ('all', (), False),
])
def test_fine_tuning_restores_freezes_and_trains_the_chosen_layers(
    moved_source, target_records, tmp_path, trainable, frozen, exported):
  model_dir = tmp_path / 'ft'
  assert train.main(finetune_args(target_records, model_dir, moved_source, '--trainable',
                                  trainable, '--max-steps', '3', exported=exported)) == 0
  model = rundir.load_config(str(model_dir)).model
  source = _checkpoint(tf1.train.latest_checkpoint(str(moved_source)))
  start = _checkpoint(model_dir / 'model.ckpt-0')  # saved right after the warm start
  end = _checkpoint(tf1.train.latest_checkpoint(str(model_dir)))
  names = list(finetune.net_variables(model))
  classifier = [n for n in names if finetune.is_classifier(n, model)]
  assert classifier and all(end[n].shape[-1] == 3 for n in classifier if n.endswith('biases'))
  for name in names:
    layer = finetune.layer_of(name, model)
    if layer != model.logits_name:
      np.testing.assert_array_equal(start[name], source[name], err_msg=name)  # restored
    if layer in frozen:
      np.testing.assert_array_equal(end[name], source[name], err_msg=name)
    else:
      assert not np.array_equal(end[name], start[name]), f'{name} did not train'
  # Momentum slots exist for the training variables only.
  slots = {n[:-len('/Momentum')] for n in end if n.endswith('/Momentum')}
  assert slots == {n for n in names if finetune.layer_of(n, model) not in frozen}
  # The net and preprocessing are the source run's, and so is the mean subtracted.
  source_config = rundir.load_config(str(moved_source))
  assert rundir.load_config(str(model_dir)).data == source_config.data
  assert model == source_config.model
  np.testing.assert_array_equal(rundir.training_mean(str(model_dir)),
                                rundir.training_mean(str(moved_source)))
  assert not np.array_equal(rundir.training_mean(str(model_dir)),
                            records.read_mean_image(str(target_records)))
  if exported:  # the end of the user's path: a SavedModel that serves the new classes
    saved = export.latest_export(str(model_dir / 'export'))
    np.testing.assert_array_equal(export.read_exported_mean(saved),
                                  rundir.training_mean(str(moved_source)))
    files = records.shard_files(str(target_records), records.VALIDATION)
    jpegs = [e.numpy() for e, _ in tf.data.TFRecordDataset(files).map(
        input_pipeline.parse_example).take(2)]
    serve = tf.saved_model.load(saved, tags=['serve']).signatures[export.SERVING_SIGNATURE]
    probabilities = serve(**{export.IMAGE_BYTES: tf.constant(jpegs)})[mf.PROBABILITIES]
    assert probabilities.shape == (2, 3)


def _one_step(trainable, scale):
  """One TRAIN step of the model_fn on a batch in memory: the model, {name: (value before,
  update)}, the graph's op types, the Momentum slots' names, the weight decay and the
  training weights' ||w||^2 / 2 before the step."""
  model = dataclasses.replace(recipes.CIFAR10_MODEL, num_classes=3, dropout_rate=0.0,
                              lrn_impl='reference')
  train_config = cfg.TrainConfig(init_from='unused: model_fn reads no directory',
                                 trainable=trainable, restored_lr_scale=scale)
  with tf.Graph().as_default() as graph:
    tf1.set_random_seed(0)
    images = tf.constant(np.random.default_rng(0).normal(0, 60, [4, 32, 32, 3]), tf.float32)
    spec = mf.make_model_fn(model, train_config, schedule.constant(0.01), image_summaries=0)(
        {'image': images}, tf.constant([0, 1, 2, 0]), ModeKeys.TRAIN)
    variables = {v.op.name: v for v in tf1.trainable_variables()}
    training = finetune.trainable_variables(variables.values(), model, train_config)
    half_norms = tf.add_n([tf.nn.l2_loss(v) for v in training if v.op.name.endswith('weights')])
    decay = graph.get_tensor_by_name('weight_decay:0')
    with tf1.Session(config=estimator_lib.session_config(model)) as session:
      session.run(tf1.global_variables_initializer())
      before = session.run(variables)
      decay_value, half_norm_value = session.run([decay, half_norms])
      session.run(spec.train_op)
      after = session.run(variables)
    slots = {v.op.name for v in tf1.global_variables() if v.op.name.endswith('/Momentum')}
    op_types = {op.type for op in graph.get_operations()}
  updates = {name: (before[name], after[name] - before[name]) for name in variables}
  return model, updates, op_types, slots, decay_value, half_norm_value


@pytest.mark.parametrize('trainable', [('fc8',), ('fc6', 'fc7', 'fc8'), ()])
def test_model_fn_trains_only_the_chosen_layers(trainable):
  model, updates, op_types, slots, decay, half_norm = _one_step(trainable, 1.0)
  chosen = trainable or cfg.layer_names(model)
  for name, (_, update) in updates.items():
    assert np.any(update != 0) == (finetune.layer_of(name, model) in chosen), name
  assert slots == {f'{n}/Momentum' for n in updates if finetune.layer_of(n, model) in chosen}
  # No gradient reaches a frozen conv layer: its backward ops are not even in the graph.
  assert ('Conv2DBackpropFilter' in op_types) == any(l in chosen for l in CONV)
  assert decay == pytest.approx(5e-4 * half_norm, rel=1e-5)  # the training weights' only


@pytest.mark.parametrize('trainable', [('fc6', 'fc7', 'fc8'), ()])
@pytest.mark.parametrize('scale', [0.1, 0.5])
def test_restored_lr_scale_scales_the_restored_layers_updates_only(trainable, scale):
  model, full, *_ = _one_step(trainable, 1.0)
  _, scaled, *_ = _one_step(trainable, scale)
  for name, (before, update) in full.items():
    expected = update if finetune.is_classifier(name, model) else scale * update
    # An update read back as after - before is exact to the float32 spacing of the value
    # (biases of 1 have a spacing of 1.2e-7; updates are ~1e-6).
    error = np.abs(scaled[name][1] - expected) - 2 * np.spacing(np.abs(before))
    assert np.all(error <= 1e-4 * np.abs(expected)), name
    assert np.any(expected != 0) == (not trainable or finetune.layer_of(name, model) in trainable)


def _edit_run_json(source, destination, edit):
  shutil.copytree(source, destination)
  raw = json.loads((destination / rundir.RUN_FILE).read_text())
  edit(raw['config'])
  (destination / rundir.RUN_FILE).write_text(json.dumps(raw))
  return destination


def _narrow_fc7(config):
  config['model']['dense_layers'][1]['units'] = 256


@pytest.mark.parametrize('flags, edit, named', [
    (['--tower-devices', '/cpu:0'], None, 'alexnet/tower0/conv1/weights is [5, 5, 3, 48] in '
                                          'the net, and the checkpoint holds it as [5, 5, 3, 24]'),
    ([], _narrow_fc7, 'alexnet/tower0/fc7/weights is [1024, 128] in the net'),
])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_first_variable(
    source_run, target_records, tmp_path, caplog, flags, edit, named):
  init_from = _edit_run_json(source_run, tmp_path / 'edited', edit) if edit else source_run
  model_dir = tmp_path / 'ft'
  assert train.main(finetune_args(target_records, model_dir, init_from, *flags)) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
  assert len(errors) == 1 and named in errors[0], errors
  assert not (model_dir / rundir.RUN_FILE).exists()  # refused before anything was written


def test_init_from_a_directory_without_a_run_is_a_bad_flag(target_records, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    train.main(finetune_args(target_records, tmp_path / 'ft', tmp_path))
  assert exit_info.value.code == 2
  assert 'is not a training run of alexnet_tf' in capsys.readouterr().err


@pytest.mark.parametrize('resize, message', [
    (16, 'smaller than the crop size 32'),
    (40, 'trained minus a per-pixel mean of 32x32 images; convert the dataset with --resize 32'),
])
def test_data_that_cannot_take_the_inherited_preprocessing_fails_in_one_line(
    source_run, cifar10_jpeg_subset, tmp_path, caplog, resize, message):
  data = _convert_target(cifar10_jpeg_subset, tmp_path / 'data', resize=resize)
  assert train.main(finetune_args(data, tmp_path / 'ft', source_run)) == 1
  errors = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
  assert len(errors) == 1 and message in errors[0] and str(data) in errors[0], errors


class _StartingValues(tf1.train.SessionRunHook):
  """Records the variables as the training session starts (after restore or warm start)."""

  def after_create_session(self, session, coord):
    self.values = session.run({v.op.name: v for v in tf1.trainable_variables()})


def test_a_resumed_fine_tuning_run_continues_from_its_own_checkpoint(
    source_run, target_records, tmp_path):
  model_dir = tmp_path / 'ft'
  args = finetune_args(target_records, model_dir, source_run, '--trainable', 'all',
                       '--max-steps', '3')
  assert train.main(args) == 0
  own = _checkpoint(tf1.train.latest_checkpoint(str(model_dir)))
  config, paths, _ = train.config_from_args(train.build_parser().parse_args(args))
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=6))
  hook = _StartingValues()
  run_loop.train_and_evaluate(config, paths.data_dir, paths.model_dir, extra_hooks=[hook])
  source = _checkpoint(tf1.train.latest_checkpoint(str(source_run)))
  assert rundir.latest_step(str(model_dir)) == 6
  for name, value in hook.values.items():
    np.testing.assert_array_equal(value, own[name], err_msg=name)
  assert not np.array_equal(hook.values['alexnet/tower0/conv1/weights'],
                            source['alexnet/tower0/conv1/weights'])
  assert [h['step'] for h in rundir.read_history(str(model_dir))] == [3, 6]


def test_flags_take_the_net_and_preprocessing_from_the_run_and_the_recipe_from_dataset(
    source_run, tmp_path):
  init_from = _edit_run_json(source_run, tmp_path / 'rgb', lambda c: c['data'].update(
      subtract_mean='rgb', pca_lighting_std=0.0))
  args = train.build_parser().parse_args([
      '--dataset', 'imagenet', '--data-dir', 'unused', '--init-from', str(init_from),
      '--trainable', 'fc7, fc8', '--restored-lr-scale', '0.1', '--tower-devices', '/cpu:0,/cpu:1'])
  config = train.config_from_args(args)[0]
  assert config.model == dataclasses.replace(rundir.load_config(str(source_run)).model,
                                             tower_devices=('/cpu:0', '/cpu:1'))
  assert config.data.subtract_mean == 'rgb' and config.data.pca_lighting_std == 0.0
  assert config.train.schedule == recipes.CONFIGS['imagenet'].train.schedule  # --dataset's recipe
  assert config.train.init_from == str(init_from)
  assert config.train.trainable == ('fc7', 'fc8') and config.train.restored_lr_scale == 0.1
  assert train.parse_trainable('all') == ()


@pytest.mark.parametrize('overrides, message', [
    (dict(trainable=('fc8',)), 'need init_from'),
    (dict(restored_lr_scale=0.1), 'need init_from'),
    (dict(init_from='d', restored_lr_scale=0.0), 'must be positive'),
    (dict(init_from='d', trainable=('fc8', 'fc8')), 'distinct layers'),
])
def test_train_config_refuses_bad_fine_tuning_fields(overrides, message):
  with pytest.raises(ValueError, match=message):
    cfg.TrainConfig(**overrides)


@pytest.mark.parametrize('trainable, message', [
    (('conv6', 'fc8'), 'conv6 is not a layer of the cifar10 net, whose layers are conv1, '),
    (('fc7',), 'must include the new classifier fc8'),
])
def test_config_checks_trainable_against_the_layer_table(trainable, message):
  base = recipes.get_config('cifar10')
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(base, train=dataclasses.replace(base.train, init_from='d',
                                                        trainable=trainable))


def test_an_ablation_cannot_change_the_net_of_a_fine_tuning_run(source_run):
  args = train.build_parser().parse_args([
      '--data-dir', 'unused', '--init-from', str(source_run),
      '--ablation', sorted(ablations.ABLATIONS)[0]])
  with pytest.raises(ValueError, match='--ablation changes the net'):
    train.config_from_args(args)
