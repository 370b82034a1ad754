"""Caffe's bvlc_alexnet without Caffe, for tests: its forward pass in NumPy, random weights of
its exact shapes, and the files people hold them in (.caffemodel V1/V2, caffe-tensorflow .npy).

Written from Caffe's definitions (deploy.prototxt of models/bvlc_alexnet, the layers' CPU code,
caffe.proto's field numbers) and independent of alexnet_tf: NCHW arrays, Caffe's weight
layout, grouped convolutions, Caffe's LRN over all maps, max pooling with Caffe's ceil rule,
fc6 over the (C, H, W) flatten, softmax. The protobuf encoder is hand-written for the same
reason: a test that parsed files written with the importer's own message classes could not
catch a wrong field number.
"""

import io
import pickle
import struct
from typing import Dict, List, Sequence, Tuple

import numpy as np

CROP = 227
MEAN_BGR = (104.0, 116.7, 122.7)

# name, kind, Caffe weight shape, group, stride, pad (deploy.prototxt of bvlc_alexnet)
LAYERS = (
    ('conv1', 'conv', (96, 3, 11, 11), 1, 4, 0),
    ('conv2', 'conv', (256, 48, 5, 5), 2, 1, 2),
    ('conv3', 'conv', (384, 256, 3, 3), 1, 1, 1),
    ('conv4', 'conv', (384, 192, 3, 3), 2, 1, 1),
    ('conv5', 'conv', (256, 192, 3, 3), 2, 1, 1),
    ('fc6', 'fc', (4096, 9216), 1, 1, 0),
    ('fc7', 'fc', (4096, 4096), 1, 1, 0),
    ('fc8', 'fc', (1000, 4096), 1, 1, 0),
)
# What follows each layer's ReLU (none after fc8): Caffe's norm (LRN) and pool layers.
AFTER = {'conv1': ('norm', 'pool'), 'conv2': ('norm', 'pool'), 'conv5': ('pool',)}
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0  # Caffe's lrn_param of norm1/2

Weights = Dict[str, Tuple[np.ndarray, np.ndarray]]


def preprocess(image_256: np.ndarray) -> np.ndarray:
  """uint8 RGB [256, 256, 3] -> float64 [3, 227, 227]: Caffe's TEST transform (centre crop,
  offset (256 - 227) / 2 rounded down), RGB -> BGR, minus the mean values."""
  offset = (image_256.shape[0] - CROP) // 2
  crop = image_256[offset:offset + CROP, offset:offset + CROP].astype(np.float64)
  bgr = crop[:, :, ::-1] - np.asarray(MEAN_BGR)
  return bgr.transpose(2, 0, 1)


def conv(x: np.ndarray, weights, biases, group: int, stride: int, pad: int) -> np.ndarray:
  """[N, C, H, W] -> [N, O, H', W'] with weights [O, C / group, k, k], as Caffe groups."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = weights.shape[-1]
  windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
  windows = windows[:, :, ::stride, ::stride]  # [N, C, H', W', k, k]
  n, _, out_h, out_w = windows.shape[:4]
  cin, cout = x.shape[1] // group, weights.shape[0] // group
  outs = []
  for g in range(group):
    # im2col: one row per output pixel, (c, i, j) in Caffe's weight order.
    cols = windows[:, g * cin:(g + 1) * cin].transpose(0, 2, 3, 1, 4, 5).reshape(
        n * out_h * out_w, cin * k * k)
    w = weights[g * cout:(g + 1) * cout].reshape(cout, -1).astype(np.float64)
    outs.append((cols @ w.T).reshape(n, out_h, out_w, cout).transpose(0, 3, 1, 2))
  return np.concatenate(outs, axis=1) + biases[None, :, None, None]


def lrn(x: np.ndarray) -> np.ndarray:
  """Caffe's LRN ACROSS_CHANNELS over all C maps: x / (k + alpha / n * sum x^2)^beta."""
  squares = np.pad(x ** 2, ((0, 0), (LRN_SIZE // 2, LRN_SIZE // 2), (0, 0), (0, 0)))
  window = sum(squares[:, i:i + x.shape[1]] for i in range(LRN_SIZE))
  return x / (LRN_K + LRN_ALPHA / LRN_SIZE * window) ** LRN_BETA


def max_pool(x: np.ndarray, size: int = 3, stride: int = 2) -> np.ndarray:
  """Caffe's max pooling: ceil((H - size) / stride) + 1 outputs, windows clipped at the end."""
  height, width = x.shape[2:]
  out_h = -(-(height - size) // stride) + 1
  out_w = -(-(width - size) // stride) + 1
  out = np.empty(x.shape[:2] + (out_h, out_w))
  for i in range(out_h):
    for j in range(out_w):
      out[:, :, i, j] = x[:, :, i * stride:min(i * stride + size, height),
                          j * stride:min(j * stride + size, width)].max(axis=(2, 3))
  return out


def _layer(x: np.ndarray, name: str, kind: str, group: int, stride: int, pad: int,
           weights: Weights) -> np.ndarray:
  w, b = weights[name]
  if kind == 'conv':
    return conv(x, w, b, group, stride, pad)
  return x.reshape(len(x), -1) @ w.astype(np.float64).T + b  # fc6: pool5 as (C, H, W)


def _after(x: np.ndarray, name: str) -> np.ndarray:
  """The ReLU, then Caffe's norm and pool layers that follow `name`."""
  x = np.maximum(x, 0.0)
  for stage in AFTER.get(name, ()):
    x = lrn(x) if stage == 'norm' else max_pool(x)
  return x


def forward(weights: Weights, images: np.ndarray) -> Dict[str, np.ndarray]:
  """{layer: its output before the ReLU} and 'prob': the softmax [N, 1000].

  images: float [N, 3, 227, 227] from `preprocess`.
  """
  outputs = {}
  x = images
  for name, kind, _, group, stride, pad in LAYERS:
    x = outputs[name] = _layer(x, name, kind, group, stride, pad, weights)
    if name != LAYERS[-1][0]:
      x = _after(x, name)
  logits = x - x.max(axis=1, keepdims=True)
  outputs['prob'] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return outputs


def probabilities(weights: Weights, images: np.ndarray) -> np.ndarray:
  """Caffe's `prob` output [N, 1000] for images [N, 3, 227, 227]."""
  return forward(weights, images)['prob']


def random_weights(images: np.ndarray, seed: int = 0,
                   scales: Sequence[float] = (100, 100, 50, 50, 50, 20, 20, 3)) -> Weights:
  """Gaussian weights of bvlc_alexnet's shapes, in Caffe's layout, float32.

  Each layer is scaled, in order, so that its outputs on `images` have the standard deviation
  of `scales`: ~100 at conv1/conv2 makes Caffe's LRN matter (its denominator ~2 instead of
  ~1), and ~3 at fc8 gives a softmax that is neither saturated nor uniform. Biases are
  N(0, (scale / 10)^2): large enough that a mix-up of units would show, small enough that
  the images, not the biases, decide the classes.
  """
  rng = np.random.default_rng(seed)
  weights: Weights = {}
  x = images
  for (name, kind, shape, group, stride, pad), scale in zip(LAYERS, scales):
    weights[name] = (rng.standard_normal(shape, np.float32), np.zeros(shape[0], np.float32))
    raw = _layer(x, name, kind, group, stride, pad, weights)  # linear in the weights
    bias = rng.normal(0.0, scale / 10, shape[0])
    weights[name] = ((weights[name][0] * (scale / raw.std())).astype(np.float32),
                     bias.astype(np.float32))
    x = _after(raw * (scale / raw.std()) + weights[name][1][None, :, None, None]
               if kind == 'conv' else raw * (scale / raw.std()) + weights[name][1], name)
  return weights


# --- the files ---------------------------------------------------------------------------

def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    low, value = value & 0x7f, value >> 7
    out.append(low | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(value)


def _blob(array: np.ndarray, legacy: bool, packed: bool = True) -> bytes:
  """A BlobProto: legacy num/channels/height/width (1-4) or shape (7, BlobShape.dim 1
  packed), and data (5, packed little-endian float; or unpacked, one fixed32 record per
  value, which protobuf readers must accept too)."""
  if legacy:
    dims = (1,) * (4 - array.ndim) + array.shape
    header = b''.join(_int_field(f, d) for f, d in zip((1, 2, 3, 4), dims))
  else:
    header = _bytes_field(7, _bytes_field(1, b''.join(_varint(d) for d in array.shape)))
  values = np.asarray(array, '<f4')
  if not packed:
    return header + b''.join(_key(5, 5) + v.tobytes() for v in values.ravel())
  return header + _bytes_field(5, values.tobytes())


# V1LayerParameter.LayerType numbers and V2 type strings of the layers written.
_V1_TYPES = {'conv': 4, 'fc': 14, 'relu': 18, 'norm': 15, 'pool': 17}
_V2_TYPES = {'conv': 'Convolution', 'fc': 'InnerProduct', 'relu': 'ReLU', 'norm': 'LRN',
             'pool': 'Pooling'}


def _net_layers(weights: Weights) -> List[Tuple[str, str, List[np.ndarray]]]:
  """(name, kind, blobs) of the deploy net, parameter-free layers included; the layers
  missing from `weights` are left out."""
  layers = []
  for name, kind, _, _, _, _ in LAYERS:
    if name not in weights:
      continue
    layers.append((name, kind, list(weights[name])))
    if name != LAYERS[-1][0]:
      layers.append((f'relu{name[-1]}', 'relu', []))
    for stage in AFTER.get(name, ()):
      layers.append((f'{stage}{name[-1]}', stage, []))
  return layers


def caffemodel(weights: Weights, version: int, packed: bool = True) -> bytes:
  """A serialized NetParameter holding `weights` (Caffe layout): version 2 writes `layer`
  (field 100: LayerParameter name 1, type 2 string, bottom 3, top 4, blobs 7, plus a
  convolution_param 106 that readers must skip); version 1 writes `layers` (field 2:
  V1LayerParameter name 4, type 5 enum, blobs 6) with legacy 4-D blob shapes."""
  out = [_bytes_field(1, b'AlexNet')]
  for name, kind, blobs in _net_layers(weights):
    encoded = name.encode()
    if version == 1:
      body = (_bytes_field(4, encoded) + _int_field(5, _V1_TYPES[kind]) +
              b''.join(_bytes_field(6, _blob(b, True, packed)) for b in blobs))
      out.append(_bytes_field(2, body))
    else:
      body = (_bytes_field(1, encoded) + _bytes_field(2, _V2_TYPES[kind].encode()) +
              _bytes_field(3, b'data') + _bytes_field(4, encoded) +
              b''.join(_bytes_field(7, _blob(b, False, packed)) for b in blobs))
      if kind == 'conv':
        body += _bytes_field(106, _int_field(1, len(blobs[0])))  # num_output
      out.append(_bytes_field(100, body))
  return b''.join(out)


def caffe_tensorflow_layout(weights: Weights) -> Weights:
  """What caffe-tensorflow's converter makes of Caffe's arrays: conv (h, w, c_in, c_out);
  fc (in, out), fc6's rows re-ordered from pool5's (C, H, W) flatten to (H, W, C)."""
  converted = {}
  for name, kind, _, _, _, _ in LAYERS:
    w, b = weights[name]
    if kind == 'conv':
      w = w.transpose(2, 3, 1, 0)
    elif name == 'fc6':
      w = w.reshape(4096, 256, 6, 6).transpose(2, 3, 1, 0).reshape(9216, 4096)
    else:
      w = w.T
    converted[name] = (np.ascontiguousarray(w), b)
  return converted


def npy_bytes(weights: Weights, form: str) -> bytes:
  """A caffe-tensorflow .npy of TF-layout `weights`: form 'dict' (newer: {'weights',
  'biases'}), 'list' (older: [W, b]) or 'python2' (a list-form pickle as Python 2's
  np.save wrote it: protocol 2, NumPy's bytes as Python 2 str)."""
  if form == 'dict':
    content = {n: {'weights': w, 'biases': b} for n, (w, b) in weights.items()}
  else:
    content = {n: [w, b] for n, (w, b) in weights.items()}
  stream = io.BytesIO()
  if form != 'python2':
    np.save(stream, content, allow_pickle=True)
    return stream.getvalue()
  array = np.empty((), object)
  array[()] = {n.encode(): v for n, v in content.items()}  # Python 2 str keys
  header = {'descr': '|O', 'fortran_order': False, 'shape': ()}
  np.lib.format.write_array_header_1_0(stream, header)
  _Python2Pickler(stream, protocol=2).dump(array)
  return stream.getvalue()


class _Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access  (pure-Python)
  """Writes bytes as Python 2 did (BINSTRING, a py2 str), not via Python 3's _codecs."""
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)
    self.memoize(obj)

  dispatch[bytes] = save_py2_str
