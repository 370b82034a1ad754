"""Training throughput of the distribution strategies on one machine (README, "Distributed
training"): one process vs mirrored over logical CPUs vs loopback clusters, and an
estimate of the communication's share.

Every run is the product's own training (`alexnet_tf.distribute.train_and_evaluate`; the
clusters as `python -m alexnet_tf.train` processes on 127.0.0.1, `alexnet_tf.loopback`) of
the CIFAR-10 net for --steps steps; the rate is `hooks.TaskStepsHook`'s: global steps per
second after each task's first 10 steps (start-up, graph warm-up and the final evaluation
excluded). In a cluster the global step counts every task's updates; the figure is the one
seen by the task that ran the most steps.

  single           one process, --batch-size                      (no communication)
  single_half      one process, --batch-size / 2                  (one replica's compute)
  mirrored         MirroredStrategy over /cpu:0,/cpu:1, global --batch-size
  multi_worker     chief + worker, MultiWorkerMirroredStrategy, global --batch-size
  multi_worker_1   chief alone, MultiWorkerMirroredStrategy, --batch-size / 2
  parameter_server chief + worker + ps, --batch-size per (asynchronous) update
  parameter_server_1  chief + ps, --batch-size per update

Communication share (an estimate, `comm_share`): 1 - t(without) / t(with) for pairs whose
compute per process is the same and that differ in the communication: parameter_server_1
vs single (every step pulls the variables from the ps and pushes the gradients), and
multi_worker vs multi_worker_1 (the all-reduce between the two workers; the pair also
differs in the two processes sharing the cores, which the figure includes). On 2 cores the
tasks of a cluster compete for the same cores, so scaling figures mean little here.

    python benchmarks/bench_distributed.py --work-dir /tmp/bench \\
        --json benchmarks/results/distributed.json
"""

import argparse
import dataclasses
import os
import re
import sys
import time
from typing import Dict

import common  # first: puts the checkout on sys.path and imports alexnet_tf before TF

from alexnet_tf import distribute, hooks, loopback  # noqa: E402

RATE = re.compile(r'task (\S+) ran (\d+) training steps.*; ([\d.]+) global steps/s')
RUNS = ('single', 'single_half', 'mirrored', 'multi_worker', 'multi_worker_1',
        'parameter_server', 'parameter_server_1')
CLUSTERS = {  # name: (strategy, tasks, batch divisor)
    'multi_worker': (distribute.MULTI_WORKER, {'chief': 1, 'worker': 1}, 1),
    'multi_worker_1': (distribute.MULTI_WORKER, {'chief': 1}, 2),
    'parameter_server': (distribute.PARAMETER_SERVER, {'chief': 1, 'worker': 1, 'ps': 1}, 1),
    'parameter_server_1': (distribute.PARAMETER_SERVER, {'chief': 1, 'ps': 1}, 1),
}


def train_config(batch: int, steps: int):
  config = common.net_config('cifar10', batch_size=batch)
  # No evaluation before the end: only training steps are timed.
  train = dataclasses.replace(config.train, max_steps=steps, schedule='step', seed=0,
                              eval_every_epochs=1e6)
  return dataclasses.replace(config, train=train)


def measure_in_process(name: str, data_dir: str, work_dir: str, batch: int,
                       steps: int) -> Dict[str, object]:
  """single, single_half or mirrored, in this process."""
  devices = ('/cpu:0', '/cpu:1') if name == 'mirrored' else ()
  distribution = distribute.Distribution(distribute.MIRRORED if devices else distribute.NONE,
                                         devices)
  hook = hooks.TaskStepsHook(name)
  model_dir = os.path.join(work_dir, f'dist_{name}_{time.time_ns()}')
  distribute.train_and_evaluate(train_config(batch, steps), data_dir, model_dir, None,
                                distribution, extra_hooks=[hook])
  return {'batch': batch, 'global_steps_per_sec': hook.global_steps_per_sec,
          'steps_ran': {name: hook.steps}}


def measure_cluster(name: str, data_dir: str, work_dir: str, batch: int,
                    steps: int) -> Dict[str, object]:
  """A loopback cluster; the rate seen by its busiest training task."""
  strategy, counts, _ = CLUSTERS[name]
  run_dir = os.path.join(work_dir, f'dist_{name}_{time.time_ns()}')
  args = ['--dataset', 'cifar10', '--data-dir', data_dir, '--model-dir',
          os.path.join(run_dir, 'model'), '--batch-size', str(batch), '--max-steps',
          str(steps), '--schedule', 'step', '--seed', '0', '--eval-every', '1000000',
          '--no-export', '--strategy', strategy]
  deferred = ['worker:0'] if strategy == distribute.PARAMETER_SERVER and 'worker' in counts \
      else []
  training = [t for t in loopback.tf_configs(counts) if not t.startswith('ps')]
  with loopback.LoopbackCluster(counts, args, os.path.join(run_dir, 'logs'),
                                deferred=deferred) as cluster:
    if deferred:  # see tests/test_distributed.py: started once the chief waits for it
      cluster.wait_for_log('chief:0', 'waiting for worker:0', 1800)
      cluster.start('worker:0')
    codes = cluster.wait(training, 3600)
    if any(codes.values()):
      raise RuntimeError(f'{name}: tasks exited with {codes}; logs in {run_dir}/logs')
    found = {m[0]: (int(m[1]), float(m[2])) for t in training
             for m in RATE.findall(cluster.log(t))}
  if not found:
    raise RuntimeError(f'{name}: no task logged a rate (too few --steps?); see {run_dir}')
  busiest = max(found, key=lambda t: found[t][0])
  return {'batch': batch, 'global_steps_per_sec': found[busiest][1],
          'steps_ran': {t: n for t, (n, _) in found.items()}}


def comm_share(results: Dict[str, Dict[str, object]], with_: str, without: str):
  """1 - t(without) / t(with) = 1 - rate(with) / rate(without), or None."""
  a, b = (results.get(n, {}).get('global_steps_per_sec') for n in (with_, without))
  return None if not a or not b else 1.0 - a / b


def main(argv=None) -> Dict[str, object]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch-size', type=int, default=128, help='global batch')
  parser.add_argument('--steps', type=int, default=100, help='training steps per run')
  parser.add_argument('--runs', default=','.join(RUNS), help='comma-separated subset')
  parser.add_argument('--cifar-dir', default=common.DEFAULT_CIFAR_DIR,
                      help='converted CIFAR-10 (real images); photos at 32x32 when absent')
  parser.add_argument('--work-dir', help='keep the datasets and runs here')
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, in seconds-minutes')
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch_size, args.steps, args.cifar_dir = 4, 16, None
  results = common.new_results('distributed', args, runs={})
  with common.work_directory(args.work_dir, 'bench_distributed_') as work_dir:
    data_dir = common.dataset_for('cifar10', work_dir, 40, args.cifar_dir)
    results['data'] = common.describe_data(data_dir)
    for name in args.runs.split(','):
      if name in CLUSTERS:
        batch = args.batch_size // CLUSTERS[name][2]
        run = measure_cluster(name, data_dir, work_dir, batch, args.steps)
      else:
        batch = args.batch_size // (2 if name == 'single_half' else 1)
        # Each in its own process: a fresh runtime, and logical CPUs for mirrored.
        run = common.call(measure_in_process, not args.smoke, name, data_dir, work_dir,
                          batch, args.steps)
      # Images per second: the batch of one update times the updates per second.
      run['images_per_sec'] = run['global_steps_per_sec'] * run['batch']
      results['runs'][name] = run
  results['comm_share'] = {
      'parameter_server': comm_share(results['runs'], 'parameter_server_1', 'single'),
      'multi_worker_allreduce': comm_share(results['runs'], 'multi_worker', 'multi_worker_1'),
  }
  print(common.machine_line(results))
  common.print_table(['run', 'batch', 'global steps/s', 'images/s', 'steps ran'], [
      [name, r['batch'], r['global_steps_per_sec'], r['images_per_sec'], r['steps_ran']]
      for name, r in results['runs'].items()])
  print('communication share (estimate):', results['comm_share'])
  common.write_json(args.json, results)
  return results


if __name__ == '__main__':
  sys.exit(0 if main() else 1)
