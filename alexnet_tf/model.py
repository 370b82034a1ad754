"""AlexNet as a `tf.compat.v1` graph, built from a layer table (`config.ModelConfig`).

The paper splits every layer over two GPUs ("towers"). Tower t is built under
`tf.device(config.tower_devices[t])` and holds 1/T of each layer's kernels. Layers marked
FULL read the maps of every tower (the only places where data crosses devices: conv1 reads
the image, conv3 and the fully connected layers read both towers); layers marked OWN read only
their own tower. With `num_towers=1` the same table builds one unsplit network on one device.

Names in the graph (with the default scope `alexnet`):
  alexnet/tower{t}/{layer}/weights, .../biases   the variables of tower t
  alexnet/classifier/{logits_name}/...           the classifier layer (fc8), on tower 0
  alexnet/{endpoint}:0                           one tensor per layer boundary, concatenated
                                                 over towers along channels

Endpoints of the ImageNet net on a [batch, 227, 227, 3] input (see also README.md):
  conv1 [b, 55, 55, 96]   lrn1 [b, 55, 55, 96]   pool1 [b, 27, 27, 96]
  conv2 [b, 27, 27, 256]  lrn2 [b, 27, 27, 256]  pool2 [b, 13, 13, 256]
  conv3 [b, 13, 13, 384]  conv4 [b, 13, 13, 384] conv5 [b, 13, 13, 256]
  pool5 [b, 6, 6, 256]    flatten [b, 9216]      fc6 [b, 4096]  fc7 [b, 4096]
  fc8 [b, 1000] (the logits)
60,965,224 trainable parameters with two towers, 62,378,344 with one.

Endpoints of the CIFAR-10 net (`recipes.CIFAR10_MODEL`) on [batch, 32, 32, 3]:
  conv1 [b, 32, 32, 48]   pool1 [b, 16, 16, 48]  conv2 [b, 16, 16, 96]  pool2 [b, 8, 8, 96]
  conv3 [b, 8, 8, 192]    conv4 [b, 8, 8, 192]   conv5 [b, 8, 8, 128]   pool5 [b, 4, 4, 128]
  flatten [b, 2048]       fc6 [b, 512]           fc7 [b, 512]           fc8 [b, 10]
1,784,234 trainable parameters with two towers (2,081,450 with one).

With `config.normalization == 'batch'` (not the paper's) every conv is followed by batch
normalisation before its ReLU (variables `.../{layer}/batch_norm/gamma`, `beta`,
`moving_mean`, `moving_variance`) and there is no LRN, so no `lrn1`/`lrn2` endpoints.

Precision (`config.precision`, see `alexnet_tf.precision`): the images are cast to the
compute dtype on entry and the logits back to float32 on exit, so every endpoint but the
logits has the compute dtype and the logits are always float32.

Flattening is NHWC: the 9216 inputs of fc6 are ordered (row, column, channel), with tower 0's
channels first. Weights converted from channel-first frameworks (Caffe) must be permuted
(`alexnet_tf.weights`). With `lrn_across_towers` the LRN normalises across all maps of the
layer (Caffe), each tower reading its neighbours' `depth_radius` edge maps.
"""

import contextlib
import dataclasses
from typing import Dict, List, Tuple

import tensorflow as tf

from alexnet_tf import layers, precision
from alexnet_tf.config import BATCH, FULL, ModelConfig

tf1 = tf.compat.v1

Endpoints = Dict[str, tf.Tensor]


def build_alexnet(images: tf.Tensor, config: ModelConfig, training: bool,
                  scope: str = 'alexnet') -> Tuple[tf.Tensor, Endpoints]:
  """Builds the network on `images` and returns (logits, endpoints).

  Args:
    images: float [batch, S, S, 3] with S = config.image_size, RGB, mean subtracted; cast
      to the compute dtype of config.precision.
    config: the layer table and layer hyper-parameters.
    training: Python bool; enables dropout (and batch statistics with batch normalisation).
    scope: variable scope of all variables and endpoint names.

  Returns:
    logits: float32 [batch, num_classes], also endpoints[config.logits_name].
    endpoints: layer name -> tensor, in build order (see the module docstring).

  Raises:
    ValueError: when the input is not [batch, S, S, 3] with the configured S.
  """
  _check_input(images, config)
  endpoints: Endpoints = {}
  compute = precision.compute_dtype(config.precision)
  if images.dtype != compute:
    images = tf.cast(images, compute)
  with tf1.variable_scope(scope):
    tower = _TowerScopes(config)
    towers = _build_conv_towers(images, config, tower, training, endpoints)
    towers = _build_dense_towers(towers, config, tower, training, endpoints)
    with tf.device(config.tower_devices[0]), tf1.variable_scope('classifier'):
      logits = layers.dense(_read_full(towers), config.num_classes,
                            bias_init=config.logits_bias_init,
                            stddev=_stddev(config.logits_init_stddev, config),
                            scope=config.logits_name)
    # float32 logits: the softmax, the loss and the metrics are never computed in bf16/fp16.
    endpoints[config.logits_name] = tf.identity(tf.cast(logits, tf.float32),
                                                name=config.logits_name)
  return endpoints[config.logits_name], endpoints


def _check_input(images, config):
  shape = images.shape
  expected = f'[batch, {config.image_size}, {config.image_size}, 3]'
  if shape.rank != 4:
    raise ValueError(f'the {config.name} net takes images of shape {expected}, got {shape}')
  height, width, channels = shape[1], shape[2], shape[3]
  if (height, width, channels) != (config.image_size, config.image_size, 3):
    hint = ''
    if config.image_size == 227 and (height, width) == (224, 224):
      hint = (' The paper\'s "224" is a known error: an 11x11 stride-4 VALID conv on 224 gives '
              '54x54 (and a 5x5 pool5); crop 227x227 instead.')
    raise ValueError(f'the {config.name} net takes images of shape {expected}, '
                     f'got {shape}.{hint}')


class _TowerScopes:
  """`with tower(t):` enters tower t's device and its one variable/name scope.

  Re-entering a scope by its string name would open `tower0_1/`, `tower0_2/`, ... name
  scopes, so ops of one tower would not share a prefix; the scope objects are kept instead.
  """

  def __init__(self, config):
    self._devices = config.tower_devices
    self._scopes = []
    for t in range(config.num_towers):
      with tf1.variable_scope(f'tower{t}') as scope:
        self._scopes.append(scope)

  @contextlib.contextmanager
  def __call__(self, t):
    scope = self._scopes[t]
    with tf.device(self._devices[t]), \
        tf1.variable_scope(scope, auxiliary_name_scope=False), \
        tf1.name_scope(scope.original_name_scope):
      yield


def _stddev(layer_stddev, config):
  return config.weight_stddev if layer_stddev is None else layer_stddev


def _read_full(towers: List[tf.Tensor]) -> tf.Tensor:
  """Every tower's maps, concatenated on the channel axis (the cross-device read)."""
  return towers[0] if len(towers) == 1 else tf.concat(towers, axis=-1)


def _add_endpoint(endpoints, name, towers):
  endpoints[name] = (tf.identity(towers[0], name=name) if len(towers) == 1
                     else tf.concat(towers, axis=-1, name=name))


def _build_conv_towers(images, config, tower, training, endpoints) -> List[tf.Tensor]:
  towers = [images]  # conv1 reads FULL, so every tower sees the whole image
  if config.normalization == BATCH:  # batch norm replaces LRN: one normalisation per layer
    config = dataclasses.replace(config, conv_layers=tuple(
        dataclasses.replace(spec, lrn=False) for spec in config.conv_layers))
  for spec in config.conv_layers:
    stages = {'conv': [], 'lrn': [], 'pool': []}
    # Caffe's LRN over the full width needs every tower's maps before any tower normalises.
    across = spec.lrn and config.lrn_across_towers and config.num_towers > 1
    outputs = []
    for t in range(config.num_towers):
      with tower(t):
        x = _read_full(towers) if spec.reads == FULL else towers[t]
        x = layers.conv2d(x, spec.filters // config.num_towers, spec.kernel, spec.stride,
                          spec.padding, spec.bias_init, _stddev(spec.init_stddev, config),
                          scope=spec.name)
        if config.normalization == BATCH:
          x = layers.batch_norm(x, training, scope=f'{spec.name}/batch_norm')
        x = tf.nn.relu(x)
        stages['conv'].append(x)
        if not across:
          outputs.append(_normalize_and_pool(x, spec, config, stages))
    if across:
      edges = _lrn_edges(stages['conv'], config.lrn.depth_radius, tower)
      for t in range(config.num_towers):
        with tower(t):
          outputs.append(_normalize_and_pool(stages['conv'][t], spec, config, stages,
                                             edges[t]))
    suffix = spec.name[len('conv'):] if spec.name.startswith('conv') else f'_{spec.name}'
    _add_endpoint(endpoints, spec.name, stages['conv'])
    if spec.lrn:
      _add_endpoint(endpoints, f'lrn{suffix}', stages['lrn'])
    if spec.pool:
      _add_endpoint(endpoints, f'pool{suffix}', stages['pool'])
    towers = outputs
  return towers


def _normalize_and_pool(x, spec, config, stages, edges=None):
  """One tower's LRN and pooling after the ReLU, in the paper's order (CaffeNet swaps them).

  `edges`: (the maps just before this tower's, the maps just after it), each [b, h, w, r]
  or None at the ends: the LRN then normalises across towers, as one LRN over the
  concatenated maps would (each window reaches depth_radius maps on each side).
  """
  if spec.lrn:
    name = f'{spec.name}_lrn'
    if edges is None:
      x = layers.local_response_norm(x, config.lrn, config.lrn_impl, name=name)
    else:
      before, after = edges
      wide = tf.concat([e for e in (before, x, after) if e is not None], axis=-1)
      start = 0 if before is None else before.shape[-1]
      x = layers.local_response_norm(wide, config.lrn, config.lrn_impl,
                                     name=name)[..., start:start + x.shape[-1]]
    stages['lrn'].append(x)
  if spec.pool:
    x = layers.max_pool(x, config.pool_size, config.pool_stride, config.pool_padding,
                        name=f'{spec.name}_pool')
    stages['pool'].append(x)
  return x


def _lrn_edges(maps, radius, tower):
  """For each tower, its neighbours' `radius` maps next to its own ([b, h, w, r] or None),
  sliced on the neighbour's device so that only those maps cross devices."""
  first, last = [], []
  for t, x in enumerate(maps):
    with tower(t):
      first.append(x[..., :radius] if radius else None)
      last.append(x[..., x.shape[-1] - radius:] if radius else None)
  return [(last[t - 1] if t > 0 else None, first[t + 1] if t + 1 < len(maps) else None)
          for t in range(len(maps))]


def _build_dense_towers(towers, config, tower, training, endpoints) -> List[tf.Tensor]:
  # Flattened once per tower device, after the FULL read, so each device owns its copy.
  flat = []
  for t in range(config.num_towers):
    with tower(t):
      x = _read_full(towers)
      flat.append(tf.reshape(x, [-1, x.shape[1] * x.shape[2] * x.shape[3]]))
  endpoints['flatten'] = tf.identity(flat[0], name='flatten')
  towers = flat
  for i, spec in enumerate(config.dense_layers):
    outputs = []
    for t in range(config.num_towers):
      with tower(t):
        x = towers[t] if i == 0 else _read_full(towers)
        x = tf.nn.relu(layers.dense(x, spec.units // config.num_towers, spec.bias_init,
                                    _stddev(spec.init_stddev, config), scope=spec.name))
        outputs.append(layers.dropout(x, config.dropout_rate, training,
                                      name=f'{spec.name}_dropout'))
    _add_endpoint(endpoints, spec.name, outputs)
    towers = outputs
  return towers
