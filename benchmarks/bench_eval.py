"""Evaluation throughput: 10-crop and centre-crop images/second.

The product's evaluation (`evaluate.evaluate_checkpoint` does exactly this):
`estimator.make_estimator(...).evaluate` on `input_pipeline.make_dataset(training=False,
ten_crop=...)` over the validation split, at --batch-size images per batch (a 10-crop batch
holds 10x as many crops: the softmax of the ten is averaged, paper section 4.1), from a
checkpoint of freshly initialised weights (one SGD step; speed does not depend on the
weights). Images/second between the end of the first batch and the end of batch --batches
(graph building, session start-up and the first batch are outside the window).

  python benchmarks/bench_eval.py --json benchmarks/results/eval.json   # ~2 minutes
  python benchmarks/bench_eval.py --smoke
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import common  # noqa: E402  (imports alexnet_tf before TensorFlow)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch-size', type=int, default=100, help='images per batch')
  parser.add_argument('--batches', type=int, default=5,
                      help='batches per measurement (the first is not timed)')
  common.add_common_args(parser)
  args = parser.parse_args(argv)
  if args.smoke:
    common.apply_common_smoke(args)
    args.batch_size, args.batches = 2, 2
  return args


def measure_net(net: str, data_dir: str, work_dir: str, batch_size: int, batches: int):
  """10-crop and centre-crop evaluation images/second of one net, in this process."""
  # pylint: disable=import-outside-toplevel
  from alexnet_tf import input_pipeline, records
  metadata = records.read_metadata(data_dir)
  config = common.net_config(net, num_classes=metadata.num_classes)
  split = records.VALIDATION if records.VALIDATION in metadata.counts else records.TRAIN
  available = metadata.counts[split] // batch_size
  if available < 2:
    raise ValueError(f'{data_dir}: {metadata.counts[split]} {split} images, fewer than two '
                     f'batches of {batch_size}')
  batches = min(batches, available)
  model_dir = tempfile.mkdtemp(prefix=f'eval_{net}_', dir=work_dir)
  try:
    estimator, _ = common.make_checkpoint(config, data_dir, model_dir)
    result = {'split': split, 'batch_size': batch_size, 'batches': batches,
              'lrn_impl': config.model.lrn_impl}
    source = input_pipeline.open_dataset(data_dir, config.data)
    for name, ten_crop in (('ten_crop', True), ('centre_crop', False)):
      input_fn = input_pipeline.make_input_fn(source, split, config.data, batch_size,
                                              training=False, ten_crop=ten_crop)
      timer = common.StepTimer()
      estimator.evaluate(input_fn, steps=batches, hooks=[timer], name=f'bench_{name}')
      rate = timer.rate(1, batches, batch_size)
      result[name] = {'images_per_sec': rate,
                      'crops_per_sec': rate * (10 if ten_crop else 1)}
    return result
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)


def measure(net, data_dir, work_dir, args):
  print(f'{net}: evaluation ...', flush=True)
  return common.call(measure_net, not args.no_isolate, net, data_dir, work_dir,
                     args.batch_size, args.batches)


def main(argv=None):
  args = parse_args(argv)
  results = common.new_results('bench_eval', args)
  results['nets'] = common.run_nets(args, 'bench_eval_', measure, args)
  print(f'\n{common.machine_line(results)}; batch {args.batch_size} images')
  rows = []
  for net, r in results['nets'].items():
    for name in ('ten_crop', 'centre_crop'):
      rows.append([f'{net} {name.replace("_", "-")}', r[name]['images_per_sec'],
                   r[name]['crops_per_sec'], r['peak_rss_gib']])
  common.print_table(['evaluation', 'images/s', 'crops/s', 'peak GiB'], rows)
  common.write_json(args.json, results)
  return results


if __name__ == '__main__':
  main()
