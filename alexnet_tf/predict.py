"""`python -m alexnet_tf.predict --saved-model DIR image.jpg ...`: top-5 classes per image.

Sends the files' bytes to the SavedModel's serving signature, exactly as TF Serving would.
`DIR` may be one export (`.../export/1700000000`) or the export base (the newest is used).
"""

import argparse
import logging
import os
import sys
from typing import List, Tuple

from alexnet_tf import cli_logging  # first: quiets TensorFlow's C++ logs before it loads

import tensorflow as tf

from alexnet_tf import export, model_fn

log = logging.getLogger('alexnet_tf.predict')


def load_predictor(saved_model: str):
  """The `serving_default` function of a SavedModel (or of the newest under an export base)."""
  if not os.path.isfile(os.path.join(saved_model, 'saved_model.pb')):
    saved_model = export.latest_export(saved_model)
  model = tf.saved_model.load(saved_model, tags=['serve'])
  return model.signatures[export.SERVING_SIGNATURE]


def error_reason(message: str) -> str:
  """The line of a TF runtime error that says what is wrong, without graph-execution noise."""
  noise = ('Graph execution error', 'Detected at node', '<stack traces', '[[', 'File "')
  lines = [l.strip() for l in message.splitlines()]
  useful = [l for l in lines if l and not l.startswith(noise)]
  return useful[0] if useful else lines[0]


def predict_file(predictor, path: str) -> List[Tuple[str, float]]:
  """Top-5 (class name, probability) of one image file.

  Raises:
    ValueError: naming the file, when it is not an image TF can decode.
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    out = predictor(**{export.IMAGE_BYTES: tf.constant([data])})
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f'{path}: not a readable image: {error_reason(e.message)}') from None
  names = out[model_fn.TOP_K_NAMES].numpy()[0]
  probabilities = out[model_fn.TOP_K_PROBABILITIES].numpy()[0]
  return [(n.decode(), float(p)) for n, p in zip(names, probabilities)]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m alexnet_tf.predict', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--saved-model', required=True,
                      help='an export directory, or an export base holding numbered versions')
  parser.add_argument('images', nargs='+', help='JPEG/PNG files')
  parser.add_argument('--verbose', action='store_true', help='the traceback of an error too')
  args = parser.parse_args(argv)
  cli_logging.setup()
  try:
    predictor = load_predictor(args.saved_model)
  except (OSError, ValueError) as e:
    return cli_logging.fail(log, e, args.verbose)
  failed = 0
  for path in args.images:
    try:
      top = predict_file(predictor, path)
    except (OSError, ValueError) as e:  # report the bad file, go on with the others
      cli_logging.fail(log, e, args.verbose)
      failed += 1
      continue
    print(path)
    for name, probability in top:
      print(f'  {probability:7.2%}  {name}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
