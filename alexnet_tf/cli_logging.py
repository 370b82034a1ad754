"""Logging set-up shared by the command-line entry points (never called by library code)."""

import logging
import os

LOG_FORMAT = '%(asctime)s %(name)s: %(message)s'


def setup(verbose: bool = False) -> None:
  """INFO logs with timestamps; TF's C++ info lines and TF1 deprecation notices silenced.

  Call before TensorFlow is imported: TF_CPP_MIN_LOG_LEVEL is read at import time.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
  # The tf.compat.v1 and Estimator APIs warn on every use; the warnings drown the run's log.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
