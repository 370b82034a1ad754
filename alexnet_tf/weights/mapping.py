"""bvlc_alexnet's layers -> the variables of this package's two-tower net.

Caffe's bvlc_alexnet is the paper's two-tower net: conv2, conv4 and conv5 are grouped
convolutions (group 2), whose halves are the towers' own layers; conv1, conv3 and the fully
connected layers read everything. So every layer's output units split between the towers
in order: tower t gets units [t * n / 2, (t + 1) * n / 2), and a grouped layer's group t is
exactly the weights of tower t (its inputs are tower t's maps). fc8 is the classifier.

Layouts (the shapes are checked in the file's own layout, so errors show what the file has):

  TF (caffe-tensorflow .npy)  conv (h, w, c_in, c_out), fc (in, out), fc6's rows in the
                              (H, W, C) flatten of pool5: already this net's layout
  Caffe (.caffemodel)         conv (c_out, c_in, h, w), fc (out, in), fc6's columns in the
                              (C, H, W) flatten of pool5: transposed and permuted here

Caffe's net reads BGR pixels; conv1's input channels are reversed here, so the imported net
reads RGB like every other net of this package (conv(BGR, W) = conv(RGB, W reversed)).
"""

from typing import Dict, Tuple

import numpy as np

from alexnet_tf.config import ModelConfig
from alexnet_tf.weights.readers import CAFFE_LAYOUT, FileWeights, WeightsError

# The variable names of alexnet_tf.layers (WEIGHTS, BIASES), spelled here so that a file is
# read and checked before TensorFlow loads; the importer checks them against the graph.
WEIGHTS, BIASES = 'weights', 'biases'

# The parameter layers of bvlc_alexnet and their weights' shapes in TF layout.
BVLC_ALEXNET = (
    ('conv1', (11, 11, 3, 96)),
    ('conv2', (5, 5, 48, 256)),
    ('conv3', (3, 3, 256, 384)),
    ('conv4', (3, 3, 192, 384)),
    ('conv5', (3, 3, 192, 256)),
    ('fc6', (9216, 4096)),
    ('fc7', (4096, 4096)),
    ('fc8', (4096, 1000)),
)
POOL5_SHAPE = (6, 6, 256)  # (H, W, C) of what fc6 reads

Layers = Dict[str, Tuple[np.ndarray, np.ndarray]]


def caffe_shape(tf_shape: Tuple[int, ...]) -> Tuple[int, ...]:
  """The shape Caffe stores weights of `tf_shape` in: (c_out, c_in, h, w) or (out, in)."""
  if len(tf_shape) == 4:
    return (tf_shape[3], tf_shape[2], tf_shape[0], tf_shape[1])
  return (tf_shape[1], tf_shape[0])


def to_tf_layout(weights: FileWeights) -> Layers:
  """bvlc_alexnet's eight layers of `weights`, checked and in TF layout.

  Raises:
    WeightsError naming the file and the layer: missing, of the wrong shape, or not finite.
  """
  caffe = weights.layout == CAFFE_LAYOUT
  result = {}
  for name, tf_shape in BVLC_ALEXNET:
    if name not in weights.layers:
      raise WeightsError(f'{weights.path}: layer {name} is missing (the file has '
                         f'{", ".join(sorted(weights.layers)) or "no layers"}); bvlc_alexnet '
                         f'has {", ".join(n for n, _ in BVLC_ALEXNET)}')
    kernel, bias = weights.layers[name]
    expected = caffe_shape(tf_shape) if caffe else tf_shape
    # Caffe's legacy 4-D blobs pad fc weights to (1, 1, out, in) and biases to (1, 1, 1, n).
    kernel, bias = _drop_leading_ones(kernel, len(expected)), _drop_leading_ones(bias, 1)
    layout = 'Caffe' if caffe else 'TF'
    if kernel.shape != expected:
      raise WeightsError(f'{weights.path}: {name} weights have shape {list(kernel.shape)}; '
                         f"bvlc_alexnet's are {list(expected)} in {layout} layout")
    if bias.shape != (tf_shape[-1],):
      raise WeightsError(f'{weights.path}: {name} biases have shape {list(bias.shape)}; '
                         f"bvlc_alexnet's are [{tf_shape[-1]}]")
    if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(bias))):
      raise WeightsError(f'{weights.path}: {name} holds NaN or infinite values')
    result[name] = (_caffe_to_tf(name, kernel) if caffe else kernel, bias)
  return result


def _drop_leading_ones(array: np.ndarray, rank: int) -> np.ndarray:
  while array.ndim > rank and array.shape[0] == 1:
    array = array[0]
  return array


def _caffe_to_tf(name: str, kernel: np.ndarray) -> np.ndarray:
  if kernel.ndim == 4:  # (c_out, c_in, h, w) -> (h, w, c_in, c_out)
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
  if name == BVLC_ALEXNET[5][0]:  # fc6: columns (C, H, W) -> rows (H, W, C)
    height, width, channels = POOL5_SHAPE
    kernel = kernel.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(kernel.reshape(height * width * channels, -1))
  return np.ascontiguousarray(kernel.T)


def to_variables(layers: Layers, model: ModelConfig,
                 scope: str = 'alexnet') -> Dict[str, np.ndarray]:
  """{variable name: value} of `model` (the caffe_alexnet table) from `to_tf_layout`'s layers.

  The names are those `model.build_alexnet` creates: {scope}/tower{t}/{layer}/weights and
  /biases, and {scope}/classifier/{logits_name}/... for fc8.
  """
  hidden = [spec.name for spec in model.conv_layers + model.dense_layers]
  names = [name for name, _ in BVLC_ALEXNET]
  if hidden + [model.logits_name] != names:
    raise ValueError(f'the {model.name} net has layers {hidden + [model.logits_name]}; '
                     f"bvlc_alexnet's are {names}")
  variables = {}
  for name in hidden:
    kernel, bias = layers[name]
    if name == names[0]:
      kernel = kernel[:, :, ::-1, :]  # BGR -> RGB input channels (module docstring)
    per_tower = kernel.shape[-1] // model.num_towers
    for t in range(model.num_towers):
      units = slice(t * per_tower, (t + 1) * per_tower)
      variables[f'{scope}/tower{t}/{name}/{WEIGHTS}'] = np.ascontiguousarray(kernel[..., units])
      variables[f'{scope}/tower{t}/{name}/{BIASES}'] = bias[units]
  kernel, bias = layers[model.logits_name]
  variables[f'{scope}/classifier/{model.logits_name}/{WEIGHTS}'] = kernel
  variables[f'{scope}/classifier/{model.logits_name}/{BIASES}'] = bias
  return variables
