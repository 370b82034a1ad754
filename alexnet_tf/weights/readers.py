"""Caffe's bvlc_alexnet weights from the files people have, as NumPy arrays in the file's layout.

  caffe-tensorflow's bvlc_alexnet.npy   `np.save` of a pickled dict: layer -> [W, b] (older
                                        files) or {'weights': W, 'biases': b} (newer),
                                        Python 2 pickles included; already in TF layout
  a plain pickle of that dict           the same, without the .npy header
  bvlc_alexnet.caffemodel               Caffe's binary NetParameter (V2 `layer`, V1 `layers`
                                        or V0 inside V1); Caffe's layout

Pickles are read by `RestrictedUnpickler`, which builds dicts, lists, tuples, strings, numbers
and NumPy arrays and refuses every other global: a pickle can run any code it names, and a
weights file from the internet should not. `read_weights` returns a `FileWeights`;
`alexnet_tf.weights.mapping` checks the shapes and brings them to the net's layout.
"""

import codecs
import dataclasses
import io
import os
import pickle
import tokenize
from typing import Dict, List, Tuple

import numpy as np
from google.protobuf.message import DecodeError

from alexnet_tf.weights.caffe_proto import BlobProto, NetParameter

TF_LAYOUT = 'tf'  # conv (h, w, c_in, c_out), fc (in, out), fc6 rows in (H, W, C) order
CAFFE_LAYOUT = 'caffe'  # conv (c_out, c_in, h, w), fc (out, in), fc6 columns in (C, H, W) order

_NPY_MAGIC = b'\x93NUMPY'
# The whole file is read into memory: 4x bvlc_alexnet's 244 MB bounds what that can cost.
MAX_FILE_BYTES = 1 << 30
# The first byte of a NetParameter field a .caffemodel starts with: name (1), layers (2),
# input (3), input_dim (4), force_backward (5), state (6), debug_info (7), input_shape (8),
# or layer (100, two bytes: 0xa2 0x06).
_NET_FIRST_TAGS = {0x0a, 0x12, 0x1a, 0x20, 0x22, 0x28, 0x32, 0x38, 0x42, 0xa2}
_KNOWN_OTHER_FORMATS = ((b'\x89HDF', 'an HDF5 file (Keras weights?)'),
                        (b'PK\x03\x04', 'a zip archive (.npz, or a PyTorch .pth?)'),
                        (b'\x89PNG', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'))


class WeightsError(ValueError):
  """A weights file that cannot be imported; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class FileWeights:
  """The layers of a weights file: name -> (weights, biases) float32 arrays, in `layout`."""
  path: str
  format: str  # 'npy', 'pickle' or 'caffemodel'
  layout: str  # TF_LAYOUT or CAFFE_LAYOUT
  layers: Dict[str, Tuple[np.ndarray, np.ndarray]]


class RefusedGlobalError(pickle.UnpicklingError):
  """A pickle named a global that `RestrictedUnpickler` does not load."""


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler for data only: containers, strings, numbers and NumPy arrays.

  The globals a pickled ndarray needs are allowed (its reconstructor, ndarray, dtype, and
  `_codecs.encode`, which Python 3 protocol-2 pickles use for bytes); any other global, the
  way a pickle runs code, raises RefusedGlobalError (an UnpicklingError) naming it.
  """
  _ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'): np.ndarray(0).__reduce__()[0],
      ('numpy._core.multiarray', '_reconstruct'): np.ndarray(0).__reduce__()[0],  # NumPy 2
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
      ('_codecs', 'encode'): codecs.encode,
  }

  def find_class(self, module, name):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise RefusedGlobalError(f'the pickle refers to {module}.{name}, which is neither a '
                                   f'container nor a NumPy array: refused, as a pickle can '
                                   f'run code') from None


def read_weights(path: str) -> FileWeights:
  """The layers of the weights file at `path`, whichever of the module docstring's forms.

  Raises:
    WeightsError: naming the file: unreadable, too large, of an unknown format, truncated, a
      pickle that names code, or not a dict of layers.
  """
  try:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
      raise WeightsError(f'{path}: {size} bytes, more than an AlexNet weights file holds '
                         f'(bvlc_alexnet is ~240 MB); is it the right file?')
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise WeightsError(f'{path}: cannot read it: {e.strerror or e}') from None
  if data.startswith(_NPY_MAGIC):
    return FileWeights(path, 'npy', TF_LAYOUT, _layers_of_dict(_load_npy(path, data), path))
  if data[:1] == b'\x80' or data[:2] == b'(d':  # a pickle, protocol 2+ or 0 (a dict)
    return FileWeights(path, 'pickle', TF_LAYOUT, _layers_of_dict(_unpickle(path, data), path))
  for magic, what in _KNOWN_OTHER_FORMATS:
    if data.startswith(magic):
      raise WeightsError(f'{path}: unknown format: {what}, not a caffe-tensorflow .npy or a '
                         f'Caffe .caffemodel')
  if not data or data[0] not in _NET_FIRST_TAGS:
    raise WeightsError(f'{path}: unknown format: neither a caffe-tensorflow .npy (NumPy '
                       f'header), a pickle, nor a Caffe .caffemodel (binary NetParameter)')
  return FileWeights(path, 'caffemodel', CAFFE_LAYOUT, _read_caffemodel(path, data))


def _load_npy(path: str, data: bytes):
  """The object a caffe-tensorflow .npy holds (np.save of a dict: a 0-d object array)."""
  stream = io.BytesIO(data)
  readers = {(1, 0): np.lib.format.read_array_header_1_0,
             (2, 0): np.lib.format.read_array_header_2_0}
  try:
    version = np.lib.format.read_magic(stream)
    if version not in readers:
      raise ValueError(f'format version {version[0]}.{version[1]}, not one caffe-tensorflow '
                       f'writes (1.0 or 2.0)')
    shape, _, dtype = readers[version](stream)
  except (ValueError, SyntaxError, TypeError, KeyError, tokenize.TokenError) as e:
    raise WeightsError(f'{path}: a broken .npy header: {e}') from None
  if not dtype.hasobject:
    raise WeightsError(f'{path}: a .npy of a {dtype} array of shape {shape}, not the dict of '
                       f'layers caffe-tensorflow writes')
  loaded = _unpickle(path, data[stream.tell():])
  if isinstance(loaded, np.ndarray) and loaded.shape == () and loaded.dtype.hasobject:
    return loaded.item()
  return loaded


def _unpickle(path: str, data: bytes):
  try:
    # latin1: Python 2 pickles store NumPy's raw bytes as str, which latin1 maps byte for byte.
    return RestrictedUnpickler(io.BytesIO(data), encoding='latin1').load()
  except RefusedGlobalError as e:
    raise WeightsError(f'{path}: {e}') from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, UnicodeDecodeError, OverflowError, MemoryError) as e:
    raise WeightsError(f'{path}: a broken or truncated pickle ({type(e).__name__}: {e})') from None


def _layers_of_dict(raw, path: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{layer: (weights, biases)} from {layer: [W, b]} or {layer: {'weights', 'biases'}}."""
  if not isinstance(raw, dict):
    raise WeightsError(f'{path}: holds a {type(raw).__name__}, not the dict of layers '
                       f'caffe-tensorflow writes')
  layers = {}
  for name, value in raw.items():
    if isinstance(value, dict) and {'weights', 'biases'} <= set(value):
      pair = (value['weights'], value['biases'])
    elif isinstance(value, (list, tuple)) and len(value) == 2:
      pair = tuple(value)
    else:
      raise WeightsError(f'{path}: layer {name!r} is not [weights, biases] or a dict with '
                         f'"weights" and "biases"')
    layers[str(name)] = tuple(_float_array(v, path, f'{name} {kind}')
                              for v, kind in zip(pair, ('weights', 'biases')))
  return layers


def _float_array(value, path: str, what: str) -> np.ndarray:
  if not isinstance(value, np.ndarray) or value.dtype.kind != 'f':
    raise WeightsError(f'{path}: {what} is a {getattr(value, "dtype", type(value).__name__)}, '
                       f'not an array of floats')
  return np.asarray(value, np.float32)


def _read_caffemodel(path: str, data: bytes) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  try:
    net = NetParameter.FromString(data)
  except DecodeError as e:
    raise WeightsError(f'{path}: a truncated or corrupt .caffemodel: the protobuf does not '
                       f'parse ({e})') from None
  layers = {}
  for name, blobs in _caffe_layers(net):
    if not blobs:
      continue  # ReLU, pooling, LRN, dropout, data: no parameters
    if len(blobs) != 2:
      raise WeightsError(f'{path}: layer {name!r} has {len(blobs)} blobs, expected 2 '
                         f'(weights and biases)')
    layers[name] = tuple(_blob_array(blob, path, f'{name} {kind}')
                         for blob, kind in zip(blobs, ('weights', 'biases')))
  if not layers:
    raise WeightsError(f'{path}: no layer with weights: not a trained .caffemodel (a '
                       f'.prototxt or a truncated file?)')
  return layers


def _caffe_layers(net) -> List[Tuple[str, list]]:
  """(name, blobs) of every layer, from `layer` (V2) or else `layers` (V1, or V0 inside)."""
  if len(net.layer):
    return [(layer.name, list(layer.blobs)) for layer in net.layer]
  found = []
  for layer in net.layers:
    if layer.HasField('layer'):  # V0: the old message inside the V1 wrapper
      found.append((layer.layer.name, list(layer.layer.blobs)))
    else:
      found.append((layer.name, list(layer.blobs)))
  return found


def _blob_array(blob, path: str, what: str) -> np.ndarray:
  """A (Packed)BlobProto -> float32 array of its shape (BlobShape or legacy 4-D)."""
  if blob.HasField('shape'):
    shape = tuple(int(d) for d in blob.shape.dim)
  else:
    shape = (blob.num, blob.channels, blob.height, blob.width)
  count = int(np.prod(shape, dtype=np.int64))
  raw, dtype = blob.data, '<f4'  # each read of a bytes field copies it: once only
  if not raw:
    raw, dtype = blob.double_data, '<f8'
  if raw:
    values = np.frombuffer(raw[:len(raw) - len(raw) % np.dtype(dtype).itemsize], dtype)
  else:  # unpacked values, if any, arrived as unknown fields (see caffe_proto)
    full = BlobProto.FromString(blob.SerializeToString())
    values = np.fromiter(full.data or full.double_data, np.float64)
  if values.size != count or min(shape, default=0) < 0:
    raise WeightsError(f'{path}: {what} hold {values.size} values, their shape {list(shape)} '
                       f'needs {count} (a truncated file?)')
  return values.astype(np.float32, copy=False).reshape(shape)
