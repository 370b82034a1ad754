"""Transfer on CIFAR-10: pretrain on 8 classes, fine-tune on the other 2 from 100 images each.

Stages (all by default; `--stages` picks some, each reuses what the earlier ones left in
`--work-dir`):

  prepare   class-folder trees of symlinks into `--jpeg-dir` (the real CIFAR-10 training
            JPEGs, read-only): the 8 pretraining classes (all their images, a seeded
            `--pretrain-val-per-class` of each held out as validation) and the 2 held-out
            classes (`--train-per-class` training and `--val-per-class` validation images
            each, disjoint, seeded); converted with tools/make_tfrecords.py (folder mode).
  pretrain  `python -m alexnet_tf.train --dataset cifar10` on the 8 classes.
  transfer  on the 2-class data, the same steps, batch, schedule and seeds for every variant:
            from scratch, and fine-tuned from the pretrained run (`--init-from`) with
            `--trainable fc8`, `fc6,fc7,fc8` and `all`; each run's validation top-1 is its
            final evaluation (centre crop, history.jsonl).

The results (every command, the accuracies per seed, their means, machine and date) go to
`--json`. This is an accuracy measurement, not a speed one: it can run under load.
"""

import argparse
import datetime
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
from typing import Dict, List, Sequence

import common  # noqa: F401  (machine facts; puts the checkout on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
# name -> extra train flags of a variant of the transfer stage ('scratch' has no --init-from)
VARIANTS = {
    'scratch': [],
    'fc8': ['--trainable', 'fc8'],
    'fc6-8': ['--trainable', 'fc6,fc7,fc8', '--restored-lr-scale', '0.1'],
    'all': ['--trainable', 'all', '--restored-lr-scale', '0.1'],
}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--jpeg-dir', default='/work/data/cifar10-jpeg/train',
                 help='CIFAR-10 training JPEGs in class folders (read only)')
  p.add_argument('--work-dir', required=True, help='datasets and runs go here (reused)')
  p.add_argument('--stages', default='prepare,pretrain,transfer')
  p.add_argument('--held-out', default='cat,dog', help='the 2 classes of the transfer task')
  p.add_argument('--train-per-class', type=int, default=100)
  p.add_argument('--val-per-class', type=int, default=500)
  p.add_argument('--pretrain-val-per-class', type=int, default=500)
  p.add_argument('--pretrain-per-class', type=int, default=0,
                 help='pretraining images per class, validation included (0: all)')
  p.add_argument('--pretrain-epochs', type=float, default=4.0)
  p.add_argument('--pretrain-decay-epochs', default='3,3.5')
  p.add_argument('--steps', type=int, default=150, help='training steps of every transfer run')
  p.add_argument('--batch-size', type=int, default=32, help='batch of the transfer runs')
  p.add_argument('--learning-rate', type=float, default=0.01)
  p.add_argument('--decay-epochs', default='18,22',
                 help='the transfer runs\' step schedule, in epochs of the 2-class training '
                 'set (200 // 32 = 6 steps each: 150 steps are 25 epochs)')
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--seeds', default='1,2,3')
  p.add_argument('--json', help='write the results here')
  return p


def split_files(files: Sequence[str], seed: int, counts: Sequence[int]) -> List[List[str]]:
  """A seeded shuffle of `files` cut into consecutive, disjoint parts of `counts` images."""
  files = sorted(files)
  random.Random(seed).shuffle(files)
  if sum(counts) > len(files):
    raise SystemExit(f'asked for {sum(counts)} images of a class with {len(files)}')
  parts, start = [], 0
  for count in counts:
    parts.append(files[start:start + count])
    start += count
  return parts


def link_tree(root: str, split: str, cls: str, jpeg_dir: str, names: Sequence[str]) -> None:
  folder = os.path.join(root, split, cls)
  os.makedirs(folder, exist_ok=True)
  for name in names:
    link = os.path.join(folder, name)
    if not os.path.lexists(link):
      os.symlink(os.path.join(jpeg_dir, cls, name), link)


def run(cmd: List[str], log_path: str) -> None:
  """Runs `cmd` from the checkout, its output appended to `log_path`; exits if it fails."""
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(cmd)}\n')
    log.flush()
    code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  if code:
    raise SystemExit(f'failed ({code}): {shlex.join(cmd)}; see {log_path}')


def prepare(args, held_out: Sequence[str]) -> Dict[str, str]:
  """Builds and converts the two datasets; returns {'pretrain': dir, 'transfer': dir}."""
  pretrain_classes = [c for c in CIFAR10_CLASSES if c not in held_out]
  trees = {'pretrain': os.path.join(args.work_dir, 'jpeg8'),
           'transfer': os.path.join(args.work_dir, 'jpeg2')}
  for i, cls in enumerate(CIFAR10_CLASSES):
    files = [f for f in os.listdir(os.path.join(args.jpeg_dir, cls)) if f.endswith('.jpg')]
    if cls in held_out:
      train, val = split_files(files, i, (args.train_per_class, args.val_per_class))
      tree = trees['transfer']
    else:
      total = args.pretrain_per_class or len(files)
      val, train = split_files(files, i, (args.pretrain_val_per_class,
                                          total - args.pretrain_val_per_class))
      tree = trees['pretrain']
    link_tree(tree, 'train', cls, args.jpeg_dir, train)
    link_tree(tree, 'validation', cls, args.jpeg_dir, val)
  data = {}
  for key, tree in trees.items():
    data[key] = os.path.join(args.work_dir, f'data_{key}')
    if not os.path.isfile(os.path.join(data[key], 'dataset.json')):
      run([sys.executable, 'tools/make_tfrecords.py', '--dataset', 'folder', '--source', tree,
           '--output-dir', data[key], '--name', f'cifar10_{key}', '--seed', '0',
           '--no-progress'], os.path.join(args.work_dir, 'prepare.log'))
  print('datasets:', json.dumps(data), 'pretraining classes:', ','.join(pretrain_classes))
  return data


def pretrain_command(args, data: Dict[str, str]) -> List[str]:
  return [sys.executable, '-m', 'alexnet_tf.train', '--dataset', 'cifar10_paper',
          '--data-dir', data['pretrain'], '--model-dir', pretrain_dir(args),
          '--epochs', str(args.pretrain_epochs), '--decay-epochs', args.pretrain_decay_epochs,
          '--seed', '1', '--no-export']


def pretrain_dir(args) -> str:
  return os.path.join(args.work_dir, 'runs', 'pretrain8')


def transfer_command(args, data: Dict[str, str], variant: str, seed: int) -> List[str]:
  cmd = [sys.executable, '-m', 'alexnet_tf.train', '--dataset', 'cifar10_paper',
         '--data-dir', data['transfer'],
         '--model-dir', os.path.join(args.work_dir, 'runs', f'{variant}_seed{seed}'),
         '--max-steps', str(args.steps), '--batch-size', str(args.batch_size),
         '--learning-rate', str(args.learning_rate), '--decay-epochs', args.decay_epochs,
         '--eval-every', '1000', '--seed', str(seed), '--no-export']
  if variant != 'scratch':
    cmd += ['--init-from', pretrain_dir(args), *VARIANTS[variant]]
  return cmd


def last_evaluation(model_dir: str) -> Dict[str, float]:
  with open(os.path.join(model_dir, 'history.jsonl')) as f:
    return json.loads(f.read().splitlines()[-1])


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  stages = set(args.stages.split(','))
  held_out = tuple(args.held_out.split(','))
  os.makedirs(args.work_dir, exist_ok=True)
  log_path = os.path.join(args.work_dir, 'transfer.log')
  data = prepare(args, held_out)  # cheap when done: links and datasets are reused
  results = {'benchmark': 'transfer_cifar10', 'machine': common.machine_info(),
             'date': datetime.date.today().isoformat(), 'settings': vars(args),
             'held_out': held_out}
  results['pretrain'] = {'command': shlex.join(pretrain_command(args, data))}
  if 'pretrain' in stages:
    run(pretrain_command(args, data), os.path.join(args.work_dir, 'pretrain.log'))
  if os.path.isfile(os.path.join(pretrain_dir(args), 'history.jsonl')):
    results['pretrain']['validation'] = last_evaluation(pretrain_dir(args))
  write(results, args.json)
  if 'transfer' in stages:
    variants = args.variants.split(',')
    results['transfer'] = {variant: {'runs': []} for variant in variants}
    # Seed by seed, so that a run cut short has every variant for the seeds it finished.
    for seed in (int(s) for s in args.seeds.split(',')):
      for variant in variants:
        cmd = transfer_command(args, data, variant, seed)
        run(cmd, log_path)
        metrics = last_evaluation(cmd[cmd.index('--model-dir') + 1])
        summary = results['transfer'][variant]
        summary['runs'].append({'seed': seed, 'command': shlex.join(cmd),
                                'step': metrics['step'], 'loss': metrics['loss'],
                                'top1_accuracy': metrics['top1_accuracy']})
        accs = [r['top1_accuracy'] for r in summary['runs']]
        summary['mean_top1'] = statistics.mean(accs)
        summary['stdev_top1'] = statistics.stdev(accs) if len(accs) > 1 else None
        print(f'{variant} seed {seed}: validation top-1 {metrics["top1_accuracy"]:.4f}',
              flush=True)
        write(results, args.json)
  print(json.dumps({k: v.get('mean_top1') for k, v in results.get('transfer', {}).items()}))
  return 0


def write(results, path) -> None:
  if path:
    with open(path, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  sys.exit(main())
