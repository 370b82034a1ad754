"""What the figure tools share: which model to read, and how a failure is reported."""

import argparse
import json
import sys
import traceback
from typing import Callable, Sequence

from alexnet_tf import activations, cli_logging


def add_model_args(parser: argparse.ArgumentParser, several: bool = False) -> None:
  """--model-dir (a training run) or --saved-model (an export), --checkpoint, --verbose."""
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument('--model-dir', nargs='+' if several else None,
                     help='training run directory' + ('(s)' if several else ''))
  group.add_argument('--saved-model', nargs='+' if several else None,
                     help='exported SavedModel directory' + ('(s)' if several else ''))
  parser.add_argument('--checkpoint', default='best',
                      help='with --model-dir: "best" (default), "latest", a directory such as '
                      'cycles/epoch-37, or a checkpoint path')
  parser.add_argument('--output', required=True, help='PNG to write')
  parser.add_argument('--verbose', action='store_true', help='a traceback with an error')


def open_models(args) -> Sequence[activations.Trained]:
  """Every model the flags name, opened (a list of one unless the tool takes several)."""
  dirs, key = (args.model_dir, 'model_dir') if args.model_dir else (args.saved_model,
                                                                     'saved_model')
  dirs = dirs if isinstance(dirs, list) else [dirs]
  return [activations.open_trained(checkpoint=args.checkpoint, **{key: d}) for d in dirs]


def run(main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
  """Calls main(args); an expected failure becomes one line on stderr and exit status 1."""
  cli_logging.setup()
  try:
    main(args)
  except (FileNotFoundError, ValueError, KeyError) as e:
    if args.verbose:
      traceback.print_exc()
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(args.output)
  return 0


def pyplot():
  """matplotlib.pyplot drawing to files only (an extra: pip install -e '.[plot]')."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save(figure, output: str, dpi: int = 120) -> None:
  """Writes `figure` to the PNG `output` and frees it."""
  figure.tight_layout()
  figure.savefig(output, dpi=dpi)
  pyplot().close(figure)


def write_json(path, data) -> None:
  """`data` as JSON to `path`, if a path was given (the tools' --json)."""
  if path:
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(data, f, indent=2)
