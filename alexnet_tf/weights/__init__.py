"""Pretrained weights: Caffe's bvlc_alexnet imported as a run directory of this package.

  readers      the files (caffe-tensorflow .npy, pickles, .caffemodel) -> NumPy arrays
  caffe_proto  the protobuf messages of a .caffemodel, without Caffe
  mapping      layouts, the towers' halves, BGR -> RGB: arrays -> the net's variables
  importer     the run directory (config, checkpoint, class names, mean)
  cli          `python tools/import_weights.py --weights FILE --output-dir DIR`

`alexnet_tf.weights.importer.import_weights(FILE, DIR)` does it all from Python; readers and
mapping do not import TensorFlow, so a file is checked before it loads.
"""

from alexnet_tf.weights.readers import WeightsError, read_weights

__all__ = ['WeightsError', 'read_weights']
