"""alexnet_tf: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) for TensorFlow's graph world."""

import os

__version__ = '0.1.0'

# TF 2.15 turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI or newer; on
# AVX2 machines convolution gradients then run about 2x slower (measured: the CIFAR-10 net's
# Conv2DBackpropFilter/Input take 2.6 s instead of 1.1 s per batch of 128). Takes effect only
# if TensorFlow is imported after alexnet_tf; TF_ENABLE_ONEDNN_OPTS=0 opts out. This module
# must not import TensorFlow itself: the converter's worker processes import it.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
