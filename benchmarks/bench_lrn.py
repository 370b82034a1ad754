"""LRN alone: forward and forward+backward time of every `config.LRN_IMPLS` implementation
at the shapes of the two nets' LRN layers (one tower's maps, batch --batch-size).

Each case runs y = LRN(x) and dL/dx for a fixed upstream gradient in one graph session, on
post-ReLU-like inputs (half zeros, the rest |N(0, 60)|); the median of --repeats runs after
two warm-up runs. The maximum relative difference to the reference op is printed alongside.

  python benchmarks/bench_lrn.py --json benchmarks/results/lrn.json   # ~1 minute
  python benchmarks/bench_lrn.py --smoke
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import common  # noqa: E402  (imports alexnet_tf before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_tf import layers  # noqa: E402
from alexnet_tf.config import LRN_IMPLS, PAPER_LRN  # noqa: E402

tf1 = tf.compat.v1

# One tower's LRN inputs: [height, width, channels] (channels = the layer's filters / 2).
SHAPES = {
    'imagenet_lrn1': (55, 55, 48),
    'imagenet_lrn2': (27, 27, 128),
    'cifar10_lrn1': (32, 32, 24),
    'cifar10_lrn2': (16, 16, 48),
}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--impls', default=','.join(LRN_IMPLS))
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, runs in seconds')
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch_size, args.repeats = 2, 2
  return args


def measure(shape, impls, repeats):
  """{impl: {'forward_ms', 'forward_backward_ms', 'max_rel_diff_*'}} for one input shape."""
  rng = np.random.default_rng(0)
  inputs = np.maximum(rng.normal(0.0, 60.0, size=shape), 0.0).astype(np.float32)
  upstream = rng.normal(size=shape).astype(np.float32)
  out = {}
  with tf.Graph().as_default():
    x = tf.Variable(inputs)
    g = tf.Variable(upstream)
    cases = {}
    for impl in impls:
      y = layers.local_response_norm(tf.identity(x), PAPER_LRN, impl, name=f'lrn_{impl}')
      dx = tf.gradients(y, x, grad_ys=g)[0]
      cases[impl] = (y, dx)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      reference = sess.run(cases['reference']) if 'reference' in cases else None
      for impl, (y, dx) in cases.items():
        forward = common.time_calls(lambda y=y: sess.run(y.op), 2, repeats)
        both = common.time_calls(lambda y=y, dx=dx: sess.run([y.op, dx.op]), 2, repeats)
        out[impl] = {'forward_ms': 1e3 * statistics.median(forward),
                     'forward_backward_ms': 1e3 * statistics.median(both)}
        if reference is not None:
          values, grads = sess.run([y, dx])
          out[impl]['max_rel_diff_value'] = float(np.max(
              np.abs(values - reference[0]) / (np.abs(reference[0]) + 1e-6)))
          out[impl]['max_diff_gradient_of_max'] = float(
              np.max(np.abs(grads - reference[1])) / np.max(np.abs(reference[1])))
  return out


def main(argv=None):
  args = parse_args(argv)
  impls = [i for i in args.impls.split(',') if i]
  results = common.new_results('bench_lrn', args, shapes={})
  rows = []
  for name, shape in SHAPES.items():
    full = (args.batch_size,) + shape
    results['shapes'][name] = {'shape': list(full), 'impls': measure(full, impls, args.repeats)}
    timings = results['shapes'][name]['impls']
    base = timings[impls[0]]['forward_backward_ms']
    for impl in impls:
      t = timings[impl]
      rows.append([f'{name} {list(full)}', impl, t['forward_ms'], t['forward_backward_ms'],
                   base / t['forward_backward_ms'], t.get('max_rel_diff_value', ''),
                   t.get('max_diff_gradient_of_max', '')])
  print(f'\n{common.machine_line(results)}')
  common.print_table(['LRN input (one tower)', 'impl', 'forward ms', 'fwd+bwd ms',
                      f'speed-up vs {impls[0]}', 'value diff', 'grad diff'], rows)
  common.write_json(args.json, results)
  return results


if __name__ == '__main__':
  main()
