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


def one_line(error: BaseException) -> str:
  """An expected error as one line: an OSError as 'path: reason', any other as its message
  with its lines joined."""
  if isinstance(error, OSError) and error.strerror:
    return f'{error.filename}: {error.strerror}' if error.filename else error.strerror
  return ' '.join(str(error).split())


def fail(log: logging.Logger, error: BaseException, verbose: bool = False) -> int:
  """Logs an expected error in one line (with its traceback if `verbose`); returns 1, the
  exit status of every entry point's data and file problems."""
  log.error('%s', one_line(error), exc_info=error if verbose else None)
  return 1
