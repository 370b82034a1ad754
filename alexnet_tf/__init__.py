"""alexnet_tf: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) for TensorFlow's graph world."""

__version__ = '0.1.0'
