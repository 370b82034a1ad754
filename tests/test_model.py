"""Tests of the graph builder against the layer table of the spec (alexnet-spec.md, 1 and 5)."""

import dataclasses
import re

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf.model import build_alexnet

tf1 = tf.compat.v1

# The towers ask for /gpu:0 and /gpu:1; soft placement moves them to the CPU here.
SOFT_PLACEMENT = tf1.ConfigProto(allow_soft_placement=True)

IMAGENET_SHAPES = {
    'conv1': [55, 55, 96], 'lrn1': [55, 55, 96], 'pool1': [27, 27, 96],
    'conv2': [27, 27, 256], 'lrn2': [27, 27, 256], 'pool2': [13, 13, 256],
    'conv3': [13, 13, 384], 'conv4': [13, 13, 384], 'conv5': [13, 13, 256],
    'pool5': [6, 6, 256], 'flatten': [9216], 'fc6': [4096], 'fc7': [4096], 'fc8': [1000],
}
# As documented in alexnet_tf/model.py.
CIFAR10_SHAPES = {
    'conv1': [32, 32, 48], 'lrn1': [32, 32, 48], 'pool1': [16, 16, 48],
    'conv2': [16, 16, 96], 'lrn2': [16, 16, 96], 'pool2': [8, 8, 96],
    'conv3': [8, 8, 192], 'conv4': [8, 8, 192], 'conv5': [8, 8, 128],
    'pool5': [4, 4, 128], 'flatten': [2048], 'fc6': [512], 'fc7': [512], 'fc8': [10],
}


def build(model_config, training=False, batch=None, seed=None):
  """A new graph with the net on a placeholder; returns (graph, images, logits, endpoints)."""
  graph = tf.Graph()
  with graph.as_default():
    if seed is not None:
      tf1.set_random_seed(seed)
    size = model_config.image_size
    images = tf1.placeholder(tf.float32, [batch, size, size, 3], name='images')
    logits, endpoints = build_alexnet(images, model_config, training)
  return graph, images, logits, endpoints


def trainable_count(graph):
  with graph.as_default():
    return sum(int(np.prod(v.shape)) for v in tf1.trainable_variables())


def analytic_parameter_count(model_config):
  """Parameters implied by the table: an OWN layer sees 1/T of the previous layer's maps."""
  towers = model_config.num_towers
  total, channels, side = 0, 3, model_config.image_size
  for layer in model_config.conv_layers:
    fan_in = channels if layer.reads == cfg.FULL else channels // towers
    total += layer.kernel ** 2 * fan_in * layer.filters + layer.filters
    channels = layer.filters
    side = side // layer.stride if layer.padding == 'SAME' else (side - layer.kernel) // layer.stride + 1
    if layer.pool:
      side = ((side + 1) // 2 if model_config.pool_padding == 'SAME'
              else (side - model_config.pool_size) // model_config.pool_stride + 1)
  units = side * side * channels
  for layer in model_config.dense_layers:
    total += units * layer.units + layer.units
    units = layer.units
  return total + units * model_config.num_classes + model_config.num_classes


@pytest.mark.parametrize('model_config, shapes, two_towers, one_tower', [
    (recipes.IMAGENET_MODEL, IMAGENET_SHAPES, 60_965_224, 62_378_344),
    (recipes.CIFAR10_MODEL, CIFAR10_SHAPES, 1_784_234, 2_081_450),
], ids=['imagenet', 'cifar10'])
def test_shapes_and_parameter_counts(model_config, shapes, two_towers, one_tower):
  graph, _, logits, endpoints = build(model_config)
  assert {name: t.shape.as_list()[1:] for name, t in endpoints.items()} == shapes
  assert logits is endpoints['fc8']
  assert trainable_count(graph) == two_towers == analytic_parameter_count(model_config)
  single = dataclasses.replace(model_config, num_towers=1)
  assert trainable_count(build(single)[0]) == one_tower == analytic_parameter_count(single)


def test_endpoints_are_findable_by_name():
  graph, _, _, endpoints = build(recipes.IMAGENET_MODEL)
  for name, tensor in endpoints.items():
    assert graph.get_tensor_by_name(f'alexnet/{name}:0') is tensor


def test_224_input_is_rejected_with_the_reason():
  with pytest.raises(ValueError, match=r'227, 227, 3\].*224.*known error'):
    with tf.Graph().as_default():
      build_alexnet(tf.zeros([1, 224, 224, 3]), recipes.IMAGENET_MODEL, training=False)


def test_uneven_tower_split_is_rejected():
  conv = (cfg.ConvLayer('conv1', 95, 3, reads=cfg.FULL),)
  with pytest.raises(ValueError, match='95 units do not split evenly over 2 towers'):
    dataclasses.replace(recipes.CIFAR10_MODEL, conv_layers=conv)


def test_imagenet_table_is_the_papers():
  model = recipes.IMAGENET_MODEL
  biases = {l.name: l.bias_init for l in model.conv_layers + model.dense_layers}
  biases[model.logits_name] = model.logits_bias_init
  assert biases == {'conv1': 0, 'conv2': 1, 'conv3': 0, 'conv4': 1, 'conv5': 1,
                    'fc6': 1, 'fc7': 1, 'fc8': 0}
  assert [l.reads for l in model.conv_layers] == ['full', 'own', 'full', 'own', 'own']
  assert model.weight_stddev == 0.01 and model.logits_init_stddev is None
  assert all(l.init_stddev is None for l in model.conv_layers + model.dense_layers)


@pytest.mark.parametrize('model_config', [recipes.IMAGENET_MODEL, recipes.CIFAR10_MODEL],
                         ids=['imagenet', 'cifar10'])
def test_initial_values_follow_the_table(model_config):
  """Every bias is its layer's constant; weights are N(0, stddev) within sampling error."""
  graph, _, _, _ = build(model_config, seed=1)
  layers = {l.name: (l.bias_init, l.init_stddev or model_config.weight_stddev)
            for l in model_config.conv_layers + model_config.dense_layers}
  layers[model_config.logits_name] = (
      model_config.logits_bias_init, model_config.logits_init_stddev or model_config.weight_stddev)
  with graph.as_default(), tf1.Session(config=SOFT_PLACEMENT) as sess:
    sess.run(tf1.global_variables_initializer())
    values = sess.run({v.op.name: v for v in tf1.trainable_variables()})
  seen = set()
  for name, value in values.items():
    layer = name.split('/')[-2]
    seen.add(layer)
    bias, stddev = layers[layer]
    if name.endswith('biases'):
      np.testing.assert_array_equal(value, np.full_like(value, bias), err_msg=name)
    else:
      # The std estimate of n normals has relative standard error 1/sqrt(2n).
      assert abs(value.std() / stddev - 1) < 5 / np.sqrt(2 * value.size), name
      assert abs(value.mean()) < 5 * stddev / np.sqrt(value.size), name
  assert seen == set(layers)


def _tower_ops(graph, tower):
  return [op for op in graph.get_operations() if op.name.startswith(f'alexnet/tower{tower}/')]


def _requested_device(graph, op):
  """The device an op asks for, explicitly or through the variable it is bound to.

  TF leaves the device of two kinds of ops empty and pins them to their variable instead:
  initializers (colocated with the variable) and ReadVariableOp (a resource op always runs
  on the device holding the resource).
  """
  if op.device:
    return tf.DeviceSpec.from_string(op.device).to_string()
  groups = [g.decode()[len('loc:@'):] for g in op.colocation_groups()]
  if groups != [op.name]:
    return _requested_device(graph, graph.get_operation_by_name(groups[0]))
  if op.type == 'ReadVariableOp':
    return _requested_device(graph, op.inputs[0].op)
  return ''


def test_tower_ops_request_their_gpu():
  graph, _, _, _ = build(recipes.IMAGENET_MODEL)
  for tower in (0, 1):
    ops = _tower_ops(graph, tower)
    assert len(ops) > 50
    devices = {_requested_device(graph, op) for op in ops}
    assert devices == {f'/device:GPU:{tower}'}, (tower, devices)


# Ops that only move data between layers; the walk looks through them to the producing layer.
_GLUE_OPS = {'ConcatV2', 'Reshape', 'Identity', 'Const'}


def _towers_consumed(graph, tower, layer, kind):
  """The towers whose layer outputs feed the `kind` op (Conv2D/MatMul) of `layer` in `tower`."""
  op = graph.get_operation_by_name(f'alexnet/tower{tower}/{layer}/{kind}')
  stack, towers = [op.inputs[0].op], set()
  while stack:
    producer = stack.pop()
    if producer.type in _GLUE_OPS:
      stack.extend(t.op for t in producer.inputs)
      continue
    match = re.match(r'alexnet/tower(\d+)/', producer.name)
    if match:
      towers.add(int(match.group(1)))
    else:
      assert producer.type == 'Placeholder', producer.name  # only the image is outside towers
  return towers


@pytest.mark.parametrize('model_config', [recipes.IMAGENET_MODEL, recipes.CIFAR10_MODEL],
                         ids=['imagenet', 'cifar10'])
def test_cross_tower_connectivity_is_the_papers(model_config):
  graph, _, _, _ = build(model_config)
  for tower in (0, 1):
    for layer in ('conv1', 'conv2', 'conv4', 'conv5'):
      # conv1 reads only the image; the OWN layers read nothing of the other tower.
      assert _towers_consumed(graph, tower, layer, 'Conv2D') == ({tower} if layer != 'conv1' else set())
    assert _towers_consumed(graph, tower, 'conv3', 'Conv2D') == {0, 1}
    for layer in ('fc6', 'fc7'):
      assert _towers_consumed(graph, tower, layer, 'MatMul') == {0, 1}


def test_forward_pass_runs_on_two_cpu_devices():
  model_config = dataclasses.replace(recipes.IMAGENET_MODEL, tower_devices=('/cpu:0', '/cpu:1'))
  graph, images, logits, _ = build(model_config, batch=2)
  session_config = tf1.ConfigProto(device_count={'CPU': 2}, allow_soft_placement=True)
  metadata = tf1.RunMetadata()
  with graph.as_default(), tf1.Session(config=session_config) as sess:
    sess.run(tf1.global_variables_initializer())
    out = sess.run(logits, {images: np.random.default_rng(0).normal(size=(2, 227, 227, 3))},
                   options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                   run_metadata=metadata)
  assert out.shape == (2, 1000) and np.all(np.isfinite(out))
  executed = {}
  for dev in metadata.step_stats.dev_stats:
    executed.setdefault(tf.DeviceSpec.from_string(dev.device).device_index, set()).update(
        n.node_name for n in dev.node_stats)
  for tower in (0, 1):
    # Grappler fuses Conv2D+BiasAdd+Relu, so match the layer scope, not the op name.
    for layer in ('conv1', 'conv2', 'conv3', 'conv5', 'fc6', 'fc7'):
      assert any(n.startswith(f'alexnet/tower{tower}/{layer}/') for n in executed[tower]), layer
    assert not any(name.startswith(f'alexnet/tower{1 - tower}/') for name in executed[tower])


def _logits_twice(model_config, training, seed):
  """Logits of two sess.run calls on one input, in a new graph with the given seed."""
  graph, images, logits, _ = build(model_config, training=training, batch=4, seed=seed)
  x = np.random.default_rng(5).normal(0, 50, size=(4, 32, 32, 3)).astype(np.float32)
  with graph.as_default(), tf1.Session(config=SOFT_PLACEMENT) as sess:
    sess.run(tf1.global_variables_initializer())
    return sess.run(logits, {images: x}), sess.run(logits, {images: x})


def test_dropout_changes_outputs_only_in_training():
  # Larger weights so that the logits depend visibly on which fc units are dropped.
  model_config = dataclasses.replace(recipes.CIFAR10_MODEL, weight_stddev=0.05)
  eval_a, eval_b = _logits_twice(model_config, training=False, seed=3)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a, train_b = _logits_twice(model_config, training=True, seed=3)
  assert np.max(np.abs(train_a - train_b)) > 1e-3 * np.max(np.abs(train_a))
  assert np.max(np.abs(train_a - eval_a)) > 1e-3 * np.max(np.abs(eval_a))


def test_fixed_graph_seed_gives_identical_logits():
  model_config = dataclasses.replace(recipes.CIFAR10_MODEL, weight_stddev=0.05)
  first = _logits_twice(model_config, training=True, seed=7)
  second = _logits_twice(model_config, training=True, seed=7)
  np.testing.assert_array_equal(first[0], second[0])
  np.testing.assert_array_equal(first[1], second[1])
  other = _logits_twice(model_config, training=True, seed=8)
  assert not np.array_equal(first[0], other[0])


def test_single_tower_variant_uses_one_device_and_no_split():
  model_config = dataclasses.replace(recipes.IMAGENET_MODEL, num_towers=1)
  graph, _, _, _ = build(model_config)
  assert not _tower_ops(graph, 1)
  with graph.as_default():
    shapes = {v.op.name: v.shape.as_list() for v in tf1.trainable_variables()}
  assert shapes['alexnet/tower0/conv2/weights'] == [5, 5, 96, 256]
  devices = {_requested_device(graph, op) for op in _tower_ops(graph, 0)}
  assert devices == {'/device:GPU:0'}
