"""`python -m alexnet_tf.train --dataset cifar10`: train, evaluate and export AlexNet.

With no `--data-dir`, CIFAR-10 is downloaded from its official URL (or `--source`), checked,
converted to TFRecords under `checkpoints/data/cifar10` and trained on; later runs reuse it.
A run started again with the same command resumes from its newest checkpoint.
"""

import argparse
import dataclasses
import logging
import os
import sys
from typing import List, Optional, Tuple

from alexnet_tf import cli_logging  # first: quiets TensorFlow's C++ logs before it loads

import tensorflow as tf

from alexnet_tf import ablations, distribute, finetune, input_pipeline, precision, records
from alexnet_tf import rundir, run_loop
from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf.convert import cifar10
from alexnet_tf.hooks import NonFiniteLossError

log = logging.getLogger('alexnet_tf.train')

CHECKPOINTS_ROOT = 'checkpoints'


@dataclasses.dataclass(frozen=True)
class Paths:
  data_dir: str
  model_dir: str
  export_dir: Optional[str]  # None: do not export at the end
  source: Optional[str]  # where to get CIFAR-10 when data_dir holds no dataset yet


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m alexnet_tf.train', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--dataset', default='cifar10', choices=sorted(recipes.CONFIGS),
                 help='which network and recipe (default: %(default)s)')
  p.add_argument('--data-dir', help='converted TFRecords (dataset.json + shards); for '
                 'cifar10 the default is checkpoints/data/cifar10, downloaded if missing')
  p.add_argument('--source', help='cifar10 only: URL, cifar-10-python.tar.gz or extracted '
                 'directory to convert when --data-dir holds no dataset (default: official URL)')
  p.add_argument('--model-dir', help='checkpoints and summaries (default: checkpoints/DATASET)')
  p.add_argument('--export-dir', help='SavedModel export base (default: MODEL_DIR/export)')
  p.add_argument('--no-export', action='store_true', help='do not export at the end')
  p.add_argument('--epochs', type=float, help='training epochs')
  p.add_argument('--max-steps', type=int, help='training steps (overrides --epochs)')
  p.add_argument('--batch-size', type=int)
  p.add_argument('--learning-rate', type=float, help='initial learning rate')
  p.add_argument('--schedule', choices=cfg.SCHEDULES, help='plateau: /10 when the validation '
                 'error stops improving (the paper); step: /10 at --decay-epochs; linear: '
                 '--warmup-epochs rising, then falling to 0 at the end; restarts: the same '
                 'warm-up, then cosine cycles to 0 of --restart-epochs, each twice the last')
  p.add_argument('--warmup-epochs', type=float, help='linear, restarts: epochs of warm-up')
  p.add_argument('--restart-epochs', type=float, help='restarts: epochs of the first cycle')
  p.add_argument('--label-smoothing', type=float, metavar='S', help='train on targets of '
                 '1 - S + S/K and S/K (0: the paper\'s hard targets)')
  p.add_argument('--nesterov', action=argparse.BooleanOptionalAction,
                 help='Nesterov momentum (--no-nesterov: the paper\'s plain momentum)')
  p.add_argument('--normalization', choices=cfg.NORMALIZATIONS, help='lrn: the paper\'s LRN; '
                 'batch: batch normalisation after every conv instead (not the paper\'s)')
  p.add_argument('--decay-epochs', help='the step schedule\'s boundaries: comma-separated '
                 'epochs after which the rate is divided by 10, e.g. "20,26"')
  p.add_argument('--eval-every', type=float, help='evaluate every this many epochs')
  p.add_argument('--tower-devices', help='comma-separated devices of the towers, e.g. '
                 '"/cpu:0,/cpu:1"; one device builds the single-tower (unsplit) net')
  p.add_argument('--lrn-impl', choices=cfg.LRN_IMPLS)
  p.add_argument('--seed', type=int, help='graph and data seed for a reproducible run')
  p.add_argument('--ablation', choices=sorted(ablations.ABLATIONS),
                 help='remove or replace one of the paper\'s ingredients (alexnet_tf/ablations.py)')
  g = p.add_argument_group('fine-tuning')
  g.add_argument('--init-from', metavar='DIR', help='a run directory of this project (a '
                 'training run or imported weights) to start from: its net, input '
                 'preprocessing and training mean are used, and all its weights but the '
                 'classifier, which starts fresh for the classes of --data-dir')
  g.add_argument('--trainable', metavar='LAYERS', help='with --init-from: the comma-separated '
                 'layers that train, e.g. fc8 or fc6,fc7,fc8; the others are frozen '
                 '(default: all)')
  g.add_argument('--restored-lr-scale', type=float, metavar='F', help='with --init-from: '
                 'learning-rate factor of the restored layers that train, e.g. 0.1 '
                 '(default: 1; the new classifier always gets the full rate)')
  p.add_argument('--strategy', default=distribute.NONE, choices=distribute.STRATEGIES,
                 help='mirrored: one machine, N devices; parameter_server, multi_worker: the '
                 'cluster in TF_CONFIG (README, "Distributed training"; default: %(default)s)')
  p.add_argument('--replica-devices', help='mirrored: comma-separated replica devices '
                 '(default: every GPU), e.g. "/gpu:0,/gpu:1" or "/cpu:0,/cpu:1"')
  p.add_argument('--precision', default=precision.AUTO, choices=precision.REQUESTS,
                 help='compute precision of the layers (variables, loss and metrics stay '
                 'fp32); auto: bf16 where the CPU or GPU has bf16 matrix units, fp16 with loss '
                 'scaling on older GPUs, else fp32 (default: %(default)s)')
  p.add_argument('--allow-emulated', action='store_true',
                 help='run a --precision this machine has no hardware for with TensorFlow\'s '
                 'generic kernels (correct but many times slower: for checking correctness)')
  p.add_argument('--verbose', action='store_true', help='the traceback of an error too')
  return p


def parse_trainable(text: str) -> Tuple[str, ...]:
  """'fc6,fc7,fc8' -> ('fc6', 'fc7', 'fc8'); 'all' -> () (TrainConfig's every layer)."""
  names = tuple(x.strip() for x in text.split(',') if x.strip())
  return () if names == ('all',) else names


def parse_decay_epochs(text: str) -> Tuple[float, ...]:
  """'20,26' -> (20.0, 26.0); positive and increasing, else ValueError naming the flag."""
  try:
    epochs = tuple(float(x) for x in text.split(',') if x.strip())
  except ValueError:
    raise ValueError(f'--decay-epochs {text!r}: expected comma-separated numbers of epochs, '
                     f'e.g. "20,26"') from None
  if not epochs or epochs[0] <= 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
    raise ValueError(f'--decay-epochs {text!r}: expected positive, increasing epochs')
  return epochs


def config_from_args(args: argparse.Namespace,
                     hardware: Optional[precision.Hardware] = None
                     ) -> Tuple[cfg.Config, Paths, precision.Choice]:
  """Turns parsed flags into the config, the paths and the precision chosen for `hardware`
  (default: this machine's, `precision.detect`); the only place flags are read.

  Raises:
    ValueError: a bad flag value, or a --precision this hardware lacks
      (`precision.PrecisionUnavailableError`), with a message naming the flag.
  """
  base = recipes.get_config(args.dataset)
  if args.ablation and args.init_from:
    raise ValueError('--ablation changes the net, and --init-from takes the net of its run '
                     'directory: use one of them')
  if args.ablation:
    base = ablations.apply(args.ablation, base)
  if args.init_from:  # the net and preprocessing its weights need; --dataset's recipe
    base = finetune.inherit_config(base, args.init_from)
  train_overrides = {name: value for name, value in (
      ('epochs', args.epochs), ('max_steps', args.max_steps), ('batch_size', args.batch_size),
      ('learning_rate', args.learning_rate), ('schedule', args.schedule),
      ('eval_every_epochs', args.eval_every), ('seed', args.seed),
      ('warmup_epochs', args.warmup_epochs), ('restart_epochs', args.restart_epochs),
      ('label_smoothing', args.label_smoothing), ('nesterov', args.nesterov),
      ('init_from', args.init_from), ('restored_lr_scale', args.restored_lr_scale))
      if value is not None}
  if args.trainable is not None:
    train_overrides['trainable'] = parse_trainable(args.trainable)
  if args.decay_epochs is not None:
    train_overrides['step_boundaries_epochs'] = parse_decay_epochs(args.decay_epochs)
  model_overrides = {}
  if args.tower_devices:
    devices = tuple(d.strip() for d in args.tower_devices.split(',') if d.strip())
    model_overrides.update(tower_devices=devices, num_towers=len(devices))
  if args.lrn_impl:
    model_overrides['lrn_impl'] = args.lrn_impl
  if args.normalization:
    model_overrides['normalization'] = args.normalization
  devices = model_overrides.get('tower_devices', base.model.tower_devices)
  towers = devices[:model_overrides.get('num_towers', base.model.num_towers)]
  try:
    choice = precision.choose(args.precision, hardware or precision.detect(towers),
                              args.allow_emulated)
  except precision.PrecisionUnavailableError as e:
    raise ValueError(f'--precision {args.precision}: {e}') from None
  model_overrides['precision'] = choice.precision
  config = cfg.Config(model=dataclasses.replace(base.model, **model_overrides),
                      data=base.data, train=dataclasses.replace(base.train, **train_overrides))
  data = recipes.data_name(args.dataset)
  if args.decay_epochs is not None and config.train.schedule != 'step':
    raise ValueError(f'--decay-epochs is for --schedule step; the {args.dataset} recipe '
                     f'uses {config.train.schedule}')
  if args.warmup_epochs is not None and config.train.schedule not in ('linear', 'restarts'):
    raise ValueError(f'--warmup-epochs is for --schedule linear or restarts; the '
                     f'{args.dataset} recipe uses {config.train.schedule}')
  if args.restart_epochs is not None and config.train.schedule != 'restarts':
    raise ValueError(f'--restart-epochs is for --schedule restarts; the {args.dataset} recipe '
                     f'uses {config.train.schedule}')
  if args.data_dir is None and data != 'cifar10':
    raise ValueError(f'--dataset {args.dataset} needs --data-dir: only CIFAR-10 can be '
                     f'downloaded; convert yours with tools/make_tfrecords.py')
  if args.source and data != 'cifar10':
    raise ValueError('--source is only for --dataset cifar10')
  model_dir = args.model_dir or os.path.join(CHECKPOINTS_ROOT, args.dataset)
  paths = Paths(
      data_dir=args.data_dir or os.path.join(CHECKPOINTS_ROOT, 'data', data),
      model_dir=model_dir,
      export_dir=None if args.no_export else (args.export_dir or os.path.join(model_dir, 'export')),
      source=args.source)
  return config, paths, choice


def ensure_cifar10(data_dir: str, source: Optional[str]) -> None:
  """Downloads and converts CIFAR-10 into `data_dir` unless a dataset is already there."""
  if os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
    return
  log.info('no dataset in %s: fetching and converting CIFAR-10', data_dir)
  cifar10.convert(source, data_dir, download_dir=os.path.join(CHECKPOINTS_ROOT, 'downloads'))


def main(argv: Optional[List[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  cli_logging.setup()
  try:
    config, paths, choice = config_from_args(args)
    devices = [d.strip() for d in (args.replica_devices or '').split(',') if d.strip()]
    distribution = distribute.make_distribution(args.strategy, devices)
    distribute.check_config(config, distribution)
  except (ValueError, FileNotFoundError) as e:  # FileNotFoundError: --init-from is no run
    parser.error(str(e))
  log.info('precision %s (--precision %s: %s)', choice.precision, args.precision, choice.reason)
  try:
    if args.data_dir is None:
      ensure_cifar10(paths.data_dir, paths.source)
    metrics = distribute.train_and_evaluate(config, paths.data_dir, paths.model_dir,
                                            paths.export_dir, distribution)
  except (NonFiniteLossError, rundir.RunDirLockedError, run_loop.StalledRunError,
          OSError, ValueError) as e:
    return cli_logging.fail(log, e, args.verbose)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    return cli_logging.fail(log, ValueError(input_pipeline.describe_data_error(e, paths.data_dir)),
                            args.verbose)
  if metrics:
    log.info('final validation: top-1 %.4f, top-5 %.4f', metrics['top1_accuracy'],
             metrics['top5_accuracy'])
  return 0


if __name__ == '__main__':
  sys.exit(main())
