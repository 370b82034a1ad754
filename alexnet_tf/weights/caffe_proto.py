"""The few messages of Caffe's caffe.proto that a `.caffemodel` needs, without Caffe.

Built at import time from a FileDescriptorProto with protobuf's own descriptor pool and
message factory (protobuf ships with TensorFlow), in a private pool so that nothing clashes
with a real `caffe` package. Field numbers and types are those of BVLC Caffe's
src/caffe/proto/caffe.proto; everything else in those messages is left out and skipped as
unknown fields when parsing:

  NetParameter      name 1, layers 2 (V1LayerParameter, before 2015), layer 100 (LayerParameter)
  LayerParameter    name 1, type 2 (string), blobs 7
  V1LayerParameter  layer 1 (V0LayerParameter), name 4, type 5 (enum LayerType), blobs 6
  V0LayerParameter  name 1, type 2 (string), blobs 50
  BlobProto         num 1, channels 2, height 3, width 4 (legacy 4-D shape), data 5 (packed
                    float), shape 7 (BlobShape), double_data 8 (packed double)
  BlobShape         dim 1 (packed int64)

The layers' blobs are parsed as `PackedBlobProto`: BlobProto with data and double_data read
as the bytes of their packed payload (a packed field is one length-delimited record, the wire
type of `bytes`), so 61 million weights become one `np.frombuffer` instead of 61 million
Python floats (~12 s). A blob written unpacked (legal protobuf, not what Caffe writes) parses
with its values as unknown fields; `BlobProto.FromString(blob.SerializeToString())` then
reads them the slow way.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = 'caffe'
_F = descriptor_pb2.FieldDescriptorProto

# V1LayerParameter.LayerType values of the layers that carry weights, and a few others (an
# enum must name the values it parses; unnamed ones are kept as unknown, which is fine).
V1_LAYER_TYPES = {'NONE': 0, 'CONVOLUTION': 4, 'DATA': 5, 'DROPOUT': 6, 'INNER_PRODUCT': 14,
                  'LRN': 15, 'POOLING': 17, 'RELU': 18, 'SOFTMAX': 20, 'SOFTMAX_LOSS': 21}


def _field(message, name, number, field_type, repeated=False, type_name=None, packed=False):
  field = message.field.add(name=name, number=number, type=field_type,
                            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if type_name:
    field.type_name = f'.{_PACKAGE}.{type_name}'
  if packed:
    field.options.packed = True


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
  proto = descriptor_pb2.FileDescriptorProto(name='alexnet_tf_caffe_subset.proto',
                                             package=_PACKAGE, syntax='proto2')
  shape = proto.message_type.add(name='BlobShape')
  _field(shape, 'dim', 1, _F.TYPE_INT64, repeated=True, packed=True)

  for name, packed in (('BlobProto', False), ('PackedBlobProto', True)):
    blob = proto.message_type.add(name=name)
    for legacy, number in (('num', 1), ('channels', 2), ('height', 3), ('width', 4)):
      _field(blob, legacy, number, _F.TYPE_INT32)
    _field(blob, 'shape', 7, _F.TYPE_MESSAGE, type_name='BlobShape')
    if packed:
      _field(blob, 'data', 5, _F.TYPE_BYTES)
      _field(blob, 'double_data', 8, _F.TYPE_BYTES)
    else:
      _field(blob, 'data', 5, _F.TYPE_FLOAT, repeated=True, packed=True)
      _field(blob, 'double_data', 8, _F.TYPE_DOUBLE, repeated=True, packed=True)

  v0 = proto.message_type.add(name='V0LayerParameter')
  _field(v0, 'name', 1, _F.TYPE_STRING)
  _field(v0, 'type', 2, _F.TYPE_STRING)
  _field(v0, 'blobs', 50, _F.TYPE_MESSAGE, repeated=True, type_name='PackedBlobProto')

  v1 = proto.message_type.add(name='V1LayerParameter')
  enum = v1.enum_type.add(name='LayerType')
  for name, number in V1_LAYER_TYPES.items():
    enum.value.add(name=name, number=number)
  _field(v1, 'layer', 1, _F.TYPE_MESSAGE, type_name='V0LayerParameter')
  _field(v1, 'name', 4, _F.TYPE_STRING)
  _field(v1, 'type', 5, _F.TYPE_ENUM, type_name='V1LayerParameter.LayerType')
  _field(v1, 'blobs', 6, _F.TYPE_MESSAGE, repeated=True, type_name='PackedBlobProto')

  layer = proto.message_type.add(name='LayerParameter')
  _field(layer, 'name', 1, _F.TYPE_STRING)
  _field(layer, 'type', 2, _F.TYPE_STRING)
  _field(layer, 'blobs', 7, _F.TYPE_MESSAGE, repeated=True, type_name='PackedBlobProto')

  net = proto.message_type.add(name='NetParameter')
  _field(net, 'name', 1, _F.TYPE_STRING)
  _field(net, 'layers', 2, _F.TYPE_MESSAGE, repeated=True, type_name='V1LayerParameter')
  _field(net, 'layer', 100, _F.TYPE_MESSAGE, repeated=True, type_name='LayerParameter')
  return proto


def _message_classes():
  pool = descriptor_pool.DescriptorPool()
  pool.Add(_file_descriptor())
  names = ('BlobShape', 'BlobProto', 'PackedBlobProto', 'V0LayerParameter',
           'V1LayerParameter', 'LayerParameter', 'NetParameter')
  return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f'{_PACKAGE}.{name}'))
          for name in names}


_CLASSES = _message_classes()
BlobShape = _CLASSES['BlobShape']
BlobProto = _CLASSES['BlobProto']
PackedBlobProto = _CLASSES['PackedBlobProto']
V0LayerParameter = _CLASSES['V0LayerParameter']
V1LayerParameter = _CLASSES['V1LayerParameter']
LayerParameter = _CLASSES['LayerParameter']
NetParameter = _CLASSES['NetParameter']
