"""Importing Caffe's bvlc_alexnet weights: the mapping is exact, the run directory works.

The real 240 MB files cannot be downloaded here, so random weights of bvlc_alexnet's exact
shapes (tests/caffe_reference.py, scaled so the net is alive through its eight layers) are
written as the files people have: .caffemodel V1 and V2 and caffe-tensorflow's .npy (newer
dict form, older list form as Python 2 wrote it). An independent NumPy forward pass of
Caffe's net on real photographs is the reference the imported model must match to 1e-4,
from the checkpoint (Estimator) and from the exported SavedModel fed PNG bytes.
"""

import base64
import dataclasses
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import caffe_reference as caffe
import photos
from alexnet_tf import config as config_lib
from alexnet_tf import recipes
from alexnet_tf import estimator as estimator_lib
from alexnet_tf import evaluate, export, input_pipeline, predict, records, rundir, train
from alexnet_tf.convert import folder as folder_converter
from alexnet_tf.convert.example import image_example
from alexnet_tf.weights import WeightsError, cli, mapping, read_weights
from alexnet_tf.weights import importer, readers
from alexnet_tf.weights.importer import ilsvrc2012_synsets
from alexnet_tf.weights.readers import RestrictedUnpickler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PHOTOS = ('chelsea', 'astronaut', 'coffee')
TOLERANCE = 1e-4
FORMATS = ('v1.caffemodel', 'v2.caffemodel', 'dict.npy', 'python2.npy')


@pytest.fixture(scope='module')
def images():
  """uint8 [256, 256, 3] photographs, warped to 256x256 as Caffe's reference models were fed."""
  return [np.asarray(Image.fromarray(photos.sample_photo(name)).resize((256, 256),
                                                                        Image.BICUBIC))
          for name in PHOTOS]


@pytest.fixture(scope='module')
def caffe_net(images):
  """(weights in Caffe's layout, Caffe's probabilities [3, 1000] by the NumPy reference)."""
  batch = np.stack([caffe.preprocess(image) for image in images])
  weights = caffe.random_weights(batch)
  return weights, caffe.probabilities(weights, batch)


@pytest.fixture(scope='module')
def weight_files(caffe_net, tmp_path_factory):
  """{form: path} of the same weights in each of FORMATS."""
  weights, _ = caffe_net
  directory = tmp_path_factory.mktemp('weights')
  tf_layout = caffe.caffe_tensorflow_layout(weights)
  contents = {'v1.caffemodel': lambda: caffe.caffemodel(weights, 1),
              'v2.caffemodel': lambda: caffe.caffemodel(weights, 2),
              'dict.npy': lambda: caffe.npy_bytes(tf_layout, 'dict'),
              'python2.npy': lambda: caffe.npy_bytes(tf_layout, 'python2')}
  paths = {}
  for form, content in contents.items():
    paths[form] = directory / f'bvlc_alexnet_{form}'
    paths[form].write_bytes(content())
  return paths


@pytest.fixture(scope='module')
def imported(weight_files, tmp_path_factory):
  """The run directory the CLI writes from the V1 .caffemodel (the real file's format)."""
  run_dir = tmp_path_factory.mktemp('imported') / 'bvlc_alexnet'
  assert cli.main(['--weights', str(weight_files['v1.caffemodel']),
                   '--output-dir', str(run_dir)]) == 0
  return run_dir


@pytest.fixture(scope='module')
def photo_dataset(images, caffe_net, tmp_path_factory):
  """A converted dataset of the photographs as 256x256 PNGs (validation split), labelled
  with Caffe's top-1 class, under the 1000 ILSVRC-2012 class names."""
  _, probabilities = caffe_net
  data_dir = tmp_path_factory.mktemp('photo_dataset')
  names = tuple(words for _, words in ilsvrc2012_synsets())
  with tf.io.TFRecordWriter(str(data_dir / records.shard_name(records.VALIDATION, 0, 1))) as w:
    for i, (image, label) in enumerate(zip(images, probabilities.argmax(axis=1))):
      w.write(image_example(_png(image), 'png', 256, 256, int(label), names[label], f'{i}.png'))
  records.write_metadata(str(data_dir), records.DatasetMetadata(
      name='photos', classes=names, counts={records.VALIDATION: len(images)},
      num_shards={records.VALIDATION: 1}, image_size=(256, 256), color_stats=None))
  return data_dir


def _png(image: np.ndarray) -> bytes:
  stream = io.BytesIO()
  Image.fromarray(image).save(stream, format='PNG')
  return stream.getvalue()


def _checkpoint_probabilities(run_dir, data_dir, model_config=None):
  """The probabilities the Estimator predicts from the run's checkpoint on data_dir's
  validation images (the evaluation input: stored 256 images, mean, centre crop)."""
  run = rundir.load_run(str(run_dir), str(data_dir))
  config = run.config if model_config is None else dataclasses.replace(run.config,
                                                                      model=model_config)
  source = input_pipeline.open_dataset(str(data_dir), config.data,
                                       mean=rundir.training_mean(str(run_dir)))
  estimator = estimator_lib.make_estimator(config, run.metadata, str(data_dir / 'estimator'))
  input_fn = input_pipeline.make_input_fn(source, records.VALIDATION, config.data, 4,
                                          training=False)
  predictions = estimator.predict(input_fn, checkpoint_path=rundir.resolve_checkpoint(
      str(run_dir)), yield_single_examples=False)
  return np.concatenate([p['probabilities'] for p in predictions])


def test_the_reference_net_is_alive(caffe_net):
  _, probabilities = caffe_net
  top = probabilities.max(axis=1)
  assert np.all((top > 0.02) & (top < 0.95)), top  # neither uniform (0.001) nor saturated
  assert np.abs(probabilities[0] - probabilities[1]).sum() > 0.1  # the images matter


def _variables(path):
  return mapping.to_variables(mapping.to_tf_layout(read_weights(str(path))),
                              recipes.get_config('caffe_alexnet').model)


@pytest.fixture(scope='module')
def v2_variables(weight_files):
  return _variables(weight_files['v2.caffemodel'])


@pytest.mark.parametrize('form', FORMATS[:1] + FORMATS[2:])
def test_every_format_maps_to_the_same_variables(weight_files, v2_variables, form):
  expected = v2_variables
  got = _variables(weight_files[form])
  assert sorted(got) == sorted(expected)
  assert [name for name in got if not np.array_equal(got[name], expected[name])] == []


@pytest.mark.parametrize('version', [1, 2])
def test_unpacked_blobs_are_read_too(caffe_net, tmp_path, version):
  """Caffe writes packed floats, which are read as one buffer; unpacked ones, also legal
  protobuf, take the slow path and give the same arrays."""
  weights, _ = caffe_net
  path = tmp_path / 'unpacked.caffemodel'
  path.write_bytes(caffe.caffemodel(_small(weights, ['conv1']), version, packed=False))
  layers = read_weights(str(path)).layers
  np.testing.assert_array_equal(layers['conv1'][0].reshape(96, 3, 11, 11), weights['conv1'][0])
  np.testing.assert_array_equal(layers['conv1'][1].ravel(), weights['conv1'][1])


def test_the_run_directory_is_a_run_of_the_caffe_net(imported):
  run = rundir.load_run(str(imported))
  assert run.config == recipes.get_config('caffe_alexnet')
  assert run.metadata.num_classes == 1000 and run.metadata.classes[281] == 'tabby, tabby cat'
  np.testing.assert_array_equal(rundir.training_mean(str(imported)),
                                np.float32([122.7, 116.7, 104.0]))
  checkpoint = rundir.resolve_checkpoint(str(imported))  # best/, what evaluate reads
  assert checkpoint == str(imported / 'best' / 'model.ckpt-0')
  assert rundir.resolve_checkpoint(str(imported), 'latest') == str(imported / 'model.ckpt-0')
  names = dict(tf.train.list_variables(checkpoint))
  assert names.pop('global_step') == []
  assert tf.train.load_checkpoint(checkpoint).get_tensor('global_step') == 0
  assert names['alexnet/tower1/conv2/weights'] == [5, 5, 48, 128]
  assert names['alexnet/classifier/fc8/weights'] == [4096, 1000]
  assert len(names) == 2 * (2 * 7 + 1)  # weights and biases: 7 layers in 2 towers, and fc8
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(imported).st_mode & 0o777 == 0o777 & ~umask  # as any new directory


def test_the_checkpoint_gives_caffes_probabilities(imported, photo_dataset, caffe_net):
  _, expected = caffe_net
  np.testing.assert_allclose(_checkpoint_probabilities(imported, photo_dataset), expected,
                             atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize('change', [
    dict(lrn_across_towers=False),  # each tower normalising its own maps, as the paper's GPUs
    dict(lrn=config_lib.PAPER_LRN),  # the paper's k = 2 and alpha not divided by n
])
def test_the_comparison_sees_the_paper_settings(imported, photo_dataset, caffe_net, change):
  """The net of the paper's defaults, with the same weights, is measurably not Caffe's: the
  1e-4 comparison above could fail."""
  _, expected = caffe_net
  model = dataclasses.replace(recipes.get_config('caffe_alexnet').model, **change)
  got = _checkpoint_probabilities(imported, photo_dataset, model)
  assert np.abs(got - expected).max() > 10 * TOLERANCE


def test_evaluate_on_the_imported_run(imported, photo_dataset, capsys):
  assert evaluate.main(['--model-dir', str(imported), '--data-dir', str(photo_dataset),
                        '--output', str(photo_dataset / 'eval.json')]) == 0
  results = json.loads((photo_dataset / 'eval.json').read_text())
  # The photos are labelled with Caffe's top-1 class: the centre crop gets every one right.
  assert results['centre_crop']['top1_error'] == 0.0
  assert results['centre_crop']['examples'] == len(PHOTOS)
  assert '| centre crop | 0.00% |' in capsys.readouterr().out


@pytest.fixture(scope='module')
def exported(imported, tmp_path_factory):
  return export.export_run(str(imported), str(tmp_path_factory.mktemp('export')))


def test_the_served_model_gives_caffes_probabilities_from_png_bytes(exported, images,
                                                                    caffe_net, tmp_path):
  """In a fresh process, as TF Serving: a REST body of base64 PNGs into serving_default."""
  _, expected = caffe_net
  request = {'batches': [[{'b64': base64.b64encode(_png(image)).decode()} for image in images]]}
  (tmp_path / 'request.json').write_text(json.dumps(request))
  subprocess.run([sys.executable, os.path.join(HERE, 'serving_client.py'), exported,
                  str(tmp_path / 'request.json'), str(tmp_path / 'result.json')], check=True)
  response = json.loads((tmp_path / 'result.json').read_text())['responses'][0]
  np.testing.assert_allclose(response['probabilities'], expected, atol=TOLERANCE, rtol=0)
  names = [words for _, words in ilsvrc2012_synsets()]
  assert [row[0] for row in response['top5_class_names']] == [
      names[i] for i in expected.argmax(axis=1)]


def test_predict_prints_the_imagenet_names(exported, images, caffe_net, tmp_path, capsys):
  _, expected = caffe_net
  path = tmp_path / 'cat.png'
  path.write_bytes(_png(images[0]))
  assert predict.main(['--saved-model', exported, str(path)]) == 0
  name = ilsvrc2012_synsets()[int(expected[0].argmax())][1]
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == str(path) and lines[1].endswith(f'%  {name}')  # the top-1 line


# --- bad files ---------------------------------------------------------------------------

class _RunsCode:
  """Pickles as a call of os.system: what a malicious weights file does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def _small(weights, names):
  return {name: weights[name] for name in names}


def _bad_file(kind, caffe_net, directory):
  """(path, the problem the error must name) of a bad weights file of `kind`."""
  weights, _ = caffe_net
  path = directory / f'bad_{kind}'
  if kind == 'runs_code':
    stream = io.BytesIO()
    np.save(stream, np.asarray({'conv1': [_RunsCode(directory / 'ran')]}, dtype=object),
            allow_pickle=True)
    path.write_bytes(stream.getvalue())
    return path, 'posix.system, which is neither a container nor a NumPy array: refused'
  if kind == 'truncated':
    data = caffe.caffemodel(_small(weights, ['conv1', 'conv2']), 2)
    path.write_bytes(data[:len(data) * 2 // 3])
    return path, 'a truncated or corrupt .caffemodel'
  if kind == 'truncated_npy':
    data = caffe.npy_bytes(_small(caffe.caffe_tensorflow_layout(weights), ['conv1']), 'list')
    path.write_bytes(data[:len(data) // 2])
    return path, 'a broken or truncated pickle'
  if kind == 'missing_layer':
    path.write_bytes(caffe.caffemodel(_small(weights, ['conv1', 'conv2', 'conv4']), 1))
    return path, 'layer conv3 is missing (the file has conv1, conv2, conv4)'
  if kind == 'wrong_shape':  # conv2 as if ungrouped: 96 inputs, not 48 per tower
    wrong = dict(_small(weights, ['conv1']), conv2=(
        np.zeros((256, 96, 5, 5), np.float32), weights['conv2'][1]))
    path.write_bytes(caffe.caffemodel(wrong, 2))
    return path, "conv2 weights have shape [256, 96, 5, 5]; bvlc_alexnet's are [256, 48, 5, 5]"
  if kind == 'caffe_layout_npy':  # Caffe's arrays saved as a .npy without converting them
    path.write_bytes(caffe.npy_bytes(_small(weights, ['conv1']), 'dict'))
    return path, "conv1 weights have shape [96, 3, 11, 11]; bvlc_alexnet's are [11, 11, 3, 96]"
  if kind == 'too_large':  # sparse: takes no disk space, and is refused before it is read
    path.touch()
    os.truncate(path, readers.MAX_FILE_BYTES + 1)
    return path, 'more than an AlexNet weights file holds'
  assert kind == 'unknown_format'
  path.write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
  return path, 'unknown format: a PNG image'


BAD_FILES = ('runs_code', 'truncated', 'truncated_npy', 'missing_layer', 'wrong_shape',
             'caffe_layout_npy', 'too_large', 'unknown_format')


@pytest.mark.parametrize('kind', BAD_FILES)
def test_a_bad_file_raises_one_error_naming_the_problem(kind, caffe_net, tmp_path):
  path, problem = _bad_file(kind, caffe_net, tmp_path)
  with pytest.raises(WeightsError) as error:
    mapping.to_tf_layout(read_weights(str(path)))
  assert str(error.value).startswith(f'{path}: ') and problem in str(error.value)
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'ran').exists()


@pytest.mark.parametrize('kind', BAD_FILES)
def test_the_cli_refuses_a_bad_file_in_one_line(kind, caffe_net, tmp_path, caplog):
  path, problem = _bad_file(kind, caffe_net, tmp_path)
  assert cli.main(['--weights', str(path), '--output-dir', str(tmp_path / 'run')]) == 1
  errors = [r for r in caplog.records if r.levelname == 'ERROR']
  assert len(errors) == 1 and problem in errors[0].getMessage() and not errors[0].exc_info
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'ran').exists()
  assert [p.name for p in tmp_path.iterdir() if '.tmp' in p.name] == []


def test_the_tool_refuses_a_pickle_that_runs_code_without_a_traceback(caffe_net, tmp_path):
  path, problem = _bad_file('runs_code', caffe_net, tmp_path)
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'import_weights.py'),
                           '--weights', str(path), '--output-dir', str(tmp_path / 'run')],
                          capture_output=True, text=True, env=env, check=False)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and problem in lines[0] and 'Traceback' not in result.stderr
  assert not (tmp_path / 'ran').exists() and not (tmp_path / 'run').exists()


def test_an_existing_output_directory_is_refused(weight_files, tmp_path, caplog):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'keep.txt').write_text('mine')
  with pytest.raises(FileExistsError, match='exists and is not empty'):
    importer.import_weights(str(weight_files['dict.npy']), str(tmp_path / 'run'))
  assert cli.main(['--weights', str(weight_files['dict.npy']),
                   '--output-dir', str(tmp_path / 'run')]) == 1
  assert 'exists and is not empty' in caplog.text
  assert os.listdir(tmp_path / 'run') == ['keep.txt']


def test_the_restricted_unpickler_loads_only_data():
  data = pickle.dumps({'a': [np.arange(3, dtype=np.float32), (1, 'x')]}, protocol=2)
  loaded = RestrictedUnpickler(io.BytesIO(data)).load()
  np.testing.assert_array_equal(loaded['a'][0], [0, 1, 2])
  with pytest.raises(pickle.UnpicklingError, match='builtins.eval'):
    RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


# --- the config switches the imported net needs --------------------------------------------

@pytest.mark.parametrize('impl', config_lib.LRN_IMPLS)
def test_the_lrn_across_towers_is_one_lrn_over_all_maps(impl):
  """Each tower's LRN, with its neighbour's edge maps, equals Caffe's LRN over the full width
  (caffe_reference.lrn); the per-tower default differs exactly at the towers' boundary."""
  from alexnet_tf import lrn, model  # pylint: disable=import-outside-toplevel
  base = dataclasses.replace(recipes.CIFAR10_MODEL, lrn=config_lib.CAFFE_LRN,
                             lrn_impl=lrn.resolve(impl, lrn.IN_PROCESS), tower_devices=('', ''))
  # Pixels of std ~6000 put conv1's maps near 100, where Caffe's LRN divides by ~2.
  images = np.random.default_rng(0).normal(0, 6000, [2, 32, 32, 3]).astype(np.float32)
  got = {}
  for across in (True, False):
    with tf.Graph().as_default():
      tf.compat.v1.set_random_seed(1)
      _, ends = model.build_alexnet(tf.constant(images),
                                    dataclasses.replace(base, lrn_across_towers=across), False)
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        got[across] = session.run({k: ends[k] for k in ('conv1', 'lrn1')})
  conv1 = got[True]['conv1']
  expected = caffe.lrn(conv1.transpose(0, 3, 1, 2).astype(np.float64)).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got[True]['lrn1'], expected, rtol=2e-5, atol=1e-4)
  alive = conv1 > 1.0
  assert (expected[alive] / conv1[alive]).min() < 0.8  # the LRN does divide
  per_tower = got[False]
  np.testing.assert_array_equal(per_tower['conv1'], conv1)  # the same weights
  differs = np.abs(per_tower['lrn1'] - expected).max(axis=(0, 1, 2)) > 1e-3
  assert sorted(np.flatnonzero(differs)) == [22, 23, 24, 25]  # 2 maps each side of 24 | 24


@pytest.mark.parametrize('build, problem', [
    (lambda: config_lib.DataConfig(crop_size=227, mean_rgb=(1.0, 2.0, 3.0)), 'mean_rgb'),
    (lambda: config_lib.DataConfig(crop_size=227, subtract_mean='rgb', mean_rgb=(1.0, 2.0)),
     'mean_rgb'),
    (lambda: dataclasses.replace(recipes.CIFAR10_MODEL, lrn_across_towers=True,
                                 lrn=config_lib.LRNConfig(depth_radius=30)),
     'needs at least depth_radius=30 maps per tower, got 24'),
])
def test_the_new_config_fields_are_validated(build, problem):
  with pytest.raises(ValueError, match=problem):
    build()


def test_the_caffe_config_survives_run_json():
  config = recipes.get_config('caffe_alexnet')
  assert config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(config)))) == config
  assert config.data.mean_rgb == (122.7, 116.7, 104.0) and config.model.lrn_across_towers
  paper = recipes.get_config('imagenet')
  assert not paper.model.lrn_across_towers and paper.data.mean_rgb is None


def test_fine_tuning_starts_from_the_imported_run(imported, images, tmp_path):
  """`train --init-from` an imported run: its weights but the classifier, Caffe's mean."""
  tree = tmp_path / 'photos'
  for i, image in enumerate(images):  # 2 classes of 4: each photo, mirrored, at 2 qualities
    folder = tree / ('cat' if i == 0 else 'other')
    folder.mkdir(parents=True, exist_ok=True)
    for flip in (False, True):
      for quality in (90, 95):
        Image.fromarray(image[:, ::-1] if flip else image).save(
            folder / f'{i}-{flip:d}-{quality}.jpg', quality=quality)
  data_dir = tmp_path / 'two_classes'
  folder_converter.convert(str(tree), str(data_dir), validation_fraction=0.25, resize=256,
                           workers=1, progress=False)
  model_dir = tmp_path / 'finetuned'
  assert train.main(['--dataset', 'imagenet', '--data-dir', str(data_dir), '--model-dir',
                     str(model_dir), '--init-from', str(imported), '--trainable', 'fc8',
                     '--batch-size', '3', '--max-steps', '2', '--seed', '1', '--no-export',
                     '--precision', 'fp32']) == 0
  source = tf.train.load_checkpoint(str(rundir.resolve_checkpoint(str(imported), 'latest')))
  tuned = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  for name in ('alexnet/tower0/conv1/weights', 'alexnet/tower1/fc7/weights'):
    np.testing.assert_array_equal(tuned.get_tensor(name), source.get_tensor(name))
  assert tuned.get_tensor('alexnet/classifier/fc8/weights').shape == (4096, 2)
  run = rundir.load_run(str(model_dir))
  assert run.config.model.lrn_across_towers and run.config.model.name == 'caffe_alexnet'
  np.testing.assert_allclose(rundir.training_mean(str(model_dir)),
                             recipes.CAFFE_MEAN_RGB)
