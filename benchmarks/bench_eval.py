"""Evaluation throughput: 10-crop and centre-crop images/second (issue 6, item 4).

The product's evaluation (`evaluate.evaluate_checkpoint` does exactly this):
`run_loop.make_estimator(...).evaluate` on `input_pipeline.make_dataset(training=False,
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
  parser.add_argument('--nets', default='imagenet,cifar10', help='comma-separated subset')
  parser.add_argument('--batch-size', type=int, default=100, help='images per batch')
  parser.add_argument('--batches', type=int, default=5,
                      help='batches per measurement (the first is not timed)')
  parser.add_argument('--images', type=int, default=4000,
                      help='sample-photo images to convert (ImageNet-sized dataset)')
  parser.add_argument('--imagenet-classes', type=int, default=1000)
  parser.add_argument('--cifar-dir', default=common.DEFAULT_CIFAR_DIR)
  parser.add_argument('--work-dir', help='keep datasets here (reused); default: a temp dir')
  parser.add_argument('--no-isolate', action='store_true', help='measure in this process')
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, runs in seconds')
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch_size, args.batches, args.images = 2, 2, 40
    args.imagenet_classes, args.no_isolate, args.cifar_dir = 10, True, None
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
    for name, ten_crop in (('ten_crop', True), ('centre_crop', False)):
      input_fn = input_pipeline.make_input_fn(data_dir, split, config.data, batch_size,
                                              training=False, ten_crop=ten_crop)
      timer = common.StepTimer()
      estimator.evaluate(input_fn, steps=batches, hooks=[timer], name=f'bench_{name}')
      rate = timer.rate(1, batches, batch_size)
      result[name] = {'images_per_sec': rate,
                      'crops_per_sec': rate * (10 if ten_crop else 1)}
    return result
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)


def main(argv=None):
  args = parse_args(argv)
  results = {'benchmark': 'bench_eval', 'machine': common.machine_info(),
             'settings': {k: v for k, v in vars(args).items() if k != 'json'}, 'nets': {}}
  work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench_eval_')
  os.makedirs(work_dir, exist_ok=True)
  try:
    for net in args.nets.split(','):
      data_dir = common.dataset_for(net, work_dir, args.images, args.cifar_dir,
                                    args.imagenet_classes)
      print(f'{net}: evaluation ...', flush=True)
      results['nets'][net] = common.call(measure_net, not args.no_isolate, net, data_dir,
                                         work_dir, args.batch_size, args.batches)
      results['nets'][net]['data'] = common.describe_data(data_dir)
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  machine = results['machine']
  print(f'\n{machine["cpu"]}, {machine["cores"]} cores, TF {machine["tensorflow"]}, '
        f'{machine["date"]}; batch {args.batch_size} images')
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
