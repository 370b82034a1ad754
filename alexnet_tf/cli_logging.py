"""Logging set-up shared by the command-line entry points (never called by library code).

Entry points import this module before anything imports TensorFlow: TF reads
TF_CPP_MIN_LOG_LEVEL once, when it loads, and its C++ info lines would otherwise open every
command's output.
"""

import logging
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

LOG_FORMAT = '%(asctime)s %(name)s: %(message)s'


def setup(verbose: bool = False) -> None:
  """INFO logs with timestamps; TF1 deprecation notices silenced."""
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
  # The tf.compat.v1 and Estimator APIs warn on every use; the warnings drown the run's log.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
