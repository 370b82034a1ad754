"""`python tools/import_weights.py --weights FILE --output-dir DIR`: Caffe's bvlc_alexnet
weights (caffe-tensorflow's bvlc_alexnet.npy or the original bvlc_alexnet.caffemodel) as a
run directory that evaluate, export, predict and train --init-from take.

A file that cannot be imported is reported in one line naming it and the problem (exit 1);
--verbose adds the traceback.
"""

import argparse
import logging
import sys
from typing import List, Optional

from alexnet_tf import cli_logging  # first: quiets TensorFlow's C++ logs before it loads

log = logging.getLogger('alexnet_tf.import_weights')


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python tools/import_weights.py', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--weights', required=True,
                      help='bvlc_alexnet.npy (caffe-tensorflow) or bvlc_alexnet.caffemodel')
  parser.add_argument('--output-dir', required=True,
                      help='the run directory to write (must not exist, or be empty)')
  parser.add_argument('--verbose', '-v', action='store_true',
                      help='debug logging, and tracebacks with errors')
  args = parser.parse_args(argv)
  cli_logging.setup(verbose=args.verbose)
  # pylint: disable=import-outside-toplevel
  from alexnet_tf import recipes
  from alexnet_tf.weights import mapping, readers
  config = recipes.get_config('caffe_alexnet')
  try:
    # The file is read and checked before TensorFlow loads: a bad one fails in a moment.
    weights = readers.read_weights(args.weights)
    variables = mapping.to_variables(mapping.to_tf_layout(weights), config.model)
    from alexnet_tf.weights import importer  # TensorFlow
    path = importer.write_run(weights, variables, args.output_dir, config)
  except (OSError, ValueError) as e:  # WeightsError is a ValueError
    log.error('%s', e, exc_info=args.verbose)
    return 1
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
