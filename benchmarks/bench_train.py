"""Training throughput, the machine's limit and peak memory.

For each net (the paper's ImageNet net at 227x227, two towers; the CIFAR-10 net), in one run:

  (a) bare step    the product's TRAIN graph (model_fn: net, cross-entropy, weight decay,
                   momentum) on one batch held in memory, `session.run(train_op)` in a loop,
                   once per LRN implementation asked for (--lrn-impls; the first listed is
                   the baseline of the speed-up column).
  (b) product loop the real training loop: `run_loop.train_and_evaluate` itself (Estimator,
                   `input_pipeline` on TFRecords of real JPEGs with the full augmentation, the
                   progress bar, summaries every 100 steps, checkpoints, the evaluation
                   listener), --warmup + --steps steps (plus one epoch first for datasets
                   cached in memory, so the cache is full), with the config's default LRN.
                   Its only evaluation boundary is the run's end, after the timed window
                   (the sample-photo "ImageNet" has 23-step epochs).
                   Images/second between the end of step --warmup and of step
                   --warmup + --steps (graph building, session start-up, the first shuffle
                   buffer fill and the final checkpoint are outside the window).
  (b)/(a)          the product loop against the bare step with the same (default) LRN.
  GEMM             measured fp32 FLOP/s of an n x n matmul (best of 5), the machine's limit.
  FLOPs            conv + fc multiply-adds counted from the layer table (`common.layer_flops`),
                   per image, forward and training (3x forward minus conv1's input gradient);
                   achieved FLOP/s of the bare step = training FLOPs x images/s.
  memory           peak resident set size (ru_maxrss) of each measurement's own process:
                   every measurement runs in a fresh spawned process.
  precisions       (a) and (b) again in each of --precisions (default fp32,bf16; the first is
                   the baseline), in the same rounds: bf16 over fp32 for the bare step of
                   each LRN and for the product loop (target >= 1.6 for the ImageNet loop
                   on a CPU with bf16 matrix units), and each precision's loop / bare step.
                   A precision the machine has no hardware for (bf16 without avx512_bf16 or
                   amx_bf16) is reported as not measurable (--allow-emulated measures it
                   anyway, on TF's generic kernels: a check that the benchmark runs).

Data: ImageNet-sized TFRecords made by the product's converter from scikit-image's sample
photographs (`common.photo_dataset`, 256x256 JPEGs, --images of them); CIFAR-10 from the
converted real dataset at --cifar-dir when present (else the photos at 32x32).

  python benchmarks/bench_train.py --json benchmarks/results/train.json    # ~6 minutes
  python benchmarks/bench_train.py --smoke                                 # seconds, tiny
  python benchmarks/bench_train.py --precisions fp32,bf16 --lrn-impls fused,none --rounds 3
"""

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import common  # noqa: E402  (imports alexnet_tf before TensorFlow)
from summarize import NO_LRN, bare_label  # noqa: E402  (TensorFlow-free)
from alexnet_tf import config as config_lib  # noqa: E402
from alexnet_tf import recipes  # noqa

TARGET_LOOP_RATIO = 0.95
TARGET_LRN_SPEEDUP = 1.10
TARGET_PEAK_GIB = 8.0
TARGET_PRECISION_SPEEDUP = 1.6  # the ImageNet product loop, bf16 over fp32
# Timed steps per net: a minute or two each on 2 cores. The machine's speed drifts by 10-15%
# over tens of seconds, so a window of 20 CIFAR-10 steps (5 s) measures a moment, not a rate.
DEFAULT_STEPS = {'imagenet': 20, 'cifar10': 300}


def parse_args(argv=None):
  default_impl = recipes.IMAGENET_MODEL.lrn_impl
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps first')
  parser.add_argument('--steps', type=int,
                      help='timed steps (default: a minute or two of each net: %s)' % (
                          ', '.join(f'{k} {v}' for k, v in DEFAULT_STEPS.items())))
  parser.add_argument('--lrn-impls', default=','.join(dict.fromkeys(['reference', default_impl])),
                      help='LRN implementations of the bare step; the first is the baseline; '
                      f'"{NO_LRN}" times the net without LRN layers (the ceiling)')
  parser.add_argument('--rounds', type=int, default=1,
                      help='time the bare steps of all --lrn-impls and then the product loop, '
                      'in turn, this many times; each reports its median round and the '
                      'ratios their per-round median (the VM drifts 10-15%% between minutes)')
  parser.add_argument('--gemm-size', type=int, default=4096)
  common.add_common_args(parser)
  args = parser.parse_args(argv)
  if args.smoke:
    common.apply_common_smoke(args)
    args.batch_size, args.warmup, args.steps, args.gemm_size = 2, 1, 2, 256
  return args


def product_loop(net: str, data_dir: str, batch_size: int, warmup: int, steps: int,
                 model_dir: str, precision: str = 'fp32'):
  """Images/second of the product's training loop (see the module docstring, (b))."""
  from alexnet_tf import records, run_loop  # pylint: disable=import-outside-toplevel
  config = common.net_config(net, batch_size=batch_size, precision=precision)
  num_train = records.read_metadata(data_dir).counts[records.TRAIN]
  steps_per_epoch = num_train // batch_size
  if config.data.cache_decoded:
    # The first epoch decodes every image into the cache; time the steady state after it.
    warmup += steps_per_epoch
  # One step past the window: the run's final checkpoint and its evaluation (the listener)
  # come after the last step and must not be timed. No evaluation boundary inside the window
  # either: the photo dataset's epoch is 23 steps where ImageNet's is 10,009, so its
  # per-epoch checkpoint and validation (~20 s) would be timed as if it came every 2 minutes.
  total = warmup + steps + 1
  config = dataclasses.replace(config, train=dataclasses.replace(
      config.train, max_steps=total, eval_every_epochs=total / steps_per_epoch,
      seed=0))  # reproducible: unseeded, the --smoke run (batch 2) once diverged to NaN
  plan = run_loop.RunPlan.make(config, num_train)
  timer = common.StepTimer()
  # The whole product: run_loop.train_and_evaluate with its progress bar, summaries,
  # checkpoints and the evaluation listener.
  run_loop.train_and_evaluate(config, data_dir, model_dir, extra_hooks=[timer])
  return {'images_per_sec': timer.rate(warmup, warmup + steps, batch_size),
          'steps': steps, 'warmup_steps': warmup, 'batch_size': batch_size,
          'steps_per_epoch': plan.steps_per_epoch,
          # False by construction (see above); a checkpoint there would be timed too.
          'checkpoint_in_window': warmup < plan.eval_every <= warmup + steps,
          'lrn_impl': config.model.lrn_impl, 'precision': precision,
          'data': common.describe_data(data_dir)}


def bare_step(net: str, lrn_impl: str, batch_size: int, warmup: int, steps: int,
              num_classes: int, precision: str = 'fp32'):
  if lrn_impl == NO_LRN:
    config = common.net_config(net, num_classes=num_classes, precision=precision)
    layers = tuple(dataclasses.replace(l, lrn=False) for l in config.model.conv_layers)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   conv_layers=layers))
  else:
    config = common.net_config(net, lrn_impl=lrn_impl, num_classes=num_classes,
                               precision=precision)
  result = common.time_bare_steps(config, batch_size, warmup, steps)
  result['lrn_impl'] = lrn_impl
  return result


def median_round(measured):
  """The measurement of the median round (by images/s), with every round's images/s."""
  ordered = sorted(measured, key=lambda m: m['images_per_sec'])
  return dict(ordered[(len(ordered) - 1) // 2],
              rounds_images_per_sec=[m['images_per_sec'] for m in measured])


def per_round_ratios(measured, baseline):
  """images/s of each round's measurement over the same round's baseline."""
  return [m['images_per_sec'] / b['images_per_sec'] for m, b in zip(measured, baseline)]


def measure_in_rounds(net, impls, precisions, args, steps, num_classes, data_dir, work_dir):
  """Each round times, in each precision, the bare step of every LRN implementation and then
  the product loop, so the ratios compare measurements taken minutes apart, not a whole run
  apart.

  Returns ({(precision, impl): [one measurement per round]}, {precision: [per round]}).
  """
  isolate = not args.no_isolate
  runs = {(p, impl): [] for p in precisions for impl in impls}
  loops = {p: [] for p in precisions}
  for r in range(args.rounds):
    of = f'(round {r + 1}/{args.rounds})'
    for p in precisions:
      for impl in impls:
        print(f'{net}: bare step, LRN {impl}, {p} {of} ...', flush=True)
        runs[p, impl].append(common.call(bare_step, isolate, net, impl, args.batch_size,
                                         args.warmup, steps, num_classes, p))
      print(f'{net}: product training loop, {p} {of} ...', flush=True)
      model_dir = tempfile.mkdtemp(prefix=f'bench_train_{net}_', dir=work_dir)
      try:
        loops[p].append(common.call(product_loop, isolate, net, data_dir, args.batch_size,
                                    args.warmup, steps, model_dir, p))
      finally:
        shutil.rmtree(model_dir, ignore_errors=True)
  return runs, loops


def summarize_precision(runs, loops, impls, baseline_runs=None, baseline_loops=None):
  """One precision's medians and ratios: {'bare': {impl: median round}, 'product',
  'lrn_speedup_rounds_vs_<impls[0]>', 'loop_over_bare(_rounds)'} and, given the baseline
  precision's measurements, 'speedup_over_baseline(_rounds)' of every bare step and the loop."""
  result = {'bare': {impl: median_round(runs[impl]) for impl in impls},
            'product': median_round(loops)}
  result['lrn_speedup_rounds_vs_' + impls[0]] = {
      impl: per_round_ratios(runs[impl], runs[impls[0]]) for impl in impls}
  default = loops[0]['lrn_impl']
  if default in runs:
    result['loop_over_bare_rounds'] = per_round_ratios(loops, runs[default])
    result['loop_over_bare'] = statistics.median(result['loop_over_bare_rounds'])
  if baseline_runs is not None:
    rounds = {bare_label(impl): per_round_ratios(runs[impl], baseline_runs[impl])
              for impl in impls}
    rounds['product loop'] = per_round_ratios(loops, baseline_loops)
    result['speedup_over_baseline_rounds'] = rounds
    result['speedup_over_baseline'] = {k: statistics.median(v) for k, v in rounds.items()}
  return result


def run_net(net, data_dir, work_dir, args, impls, precisions):
  num_classes = common.records.read_metadata(data_dir).num_classes
  steps = args.steps or DEFAULT_STEPS.get(net, DEFAULT_STEPS['imagenet'])
  result = {'flops_per_image': common.flops_per_image(
      common.net_config(net, num_classes=num_classes).model)}
  runs, loops = measure_in_rounds(net, impls, precisions, args, steps, num_classes, data_dir,
                                  work_dir)
  base = precisions[0]
  per_precision = {}
  for p in precisions:
    per_precision[p] = summarize_precision(
        {impl: runs[p, impl] for impl in impls}, loops[p], impls,
        *(({impl: runs[base, impl] for impl in impls}, loops[base]) if p != base else ()))
  # The baseline precision's figures keep their old top-level keys.
  result.update({k: v for k, v in per_precision[base].items()})
  result['precisions'] = per_precision
  bare = result['bare'].get(result['product']['lrn_impl'])
  if bare is not None:
    result['achieved_train_flops_per_sec'] = (result['flops_per_image']['train'] *
                                              bare['images_per_sec'])
  result['lrn_speedup_vs_' + impls[0]] = {
      impl: statistics.median(ratios)
      for impl, ratios in result['lrn_speedup_rounds_vs_' + impls[0]].items()}
  result['peak_rss_gib_training'] = result['product']['peak_rss_gib']
  return result


def main(argv=None):
  args = parse_args(argv)
  impls = [i for i in args.lrn_impls.split(',') if i]
  known = config_lib.LRN_IMPLS + (NO_LRN,)
  unknown = [i for i in impls if i not in known]
  if unknown:
    raise SystemExit(f'unknown LRN implementations {unknown}; choose from {known}')
  if args.rounds < 1:
    raise SystemExit(f'--rounds must be >= 1, got {args.rounds}')
  towers = recipes.IMAGENET_MODEL.tower_devices
  precisions, unmeasurable, emulated = common.measurable_precisions(args, towers)
  results = common.new_results(
      'bench_train', args, default_lrn_impl=recipes.IMAGENET_MODEL.lrn_impl,
      targets={'loop_over_bare': TARGET_LOOP_RATIO, 'lrn_speedup': TARGET_LRN_SPEEDUP,
               'peak_rss_gib': TARGET_PEAK_GIB,
               'precision_speedup_imagenet_loop': TARGET_PRECISION_SPEEDUP},
      precisions_measured=precisions, precisions_not_measurable=unmeasurable,
      precisions_emulated=emulated)
  print('GEMM ...', flush=True)
  results['gemm'] = common.call(common.gemm_flops, not args.no_isolate, args.gemm_size)
  results['nets'] = common.run_nets(args, 'bench_train_', run_net, args, impls, precisions)
  report(results, impls)
  common.write_json(args.json, results)
  return results


def report(results, impls):
  gemm = results['gemm']['flops_per_sec']
  print(f'\n{common.machine_line(results)}; batch {results["settings"]["batch_size"]}')
  print(f'fp32 GEMM {results["gemm"]["n"]}^3: {gemm / 1e9:.1f} GFLOP/s (best of 5)\n')
  rows = []
  for net, r in results['nets'].items():
    flops = r['flops_per_image']
    for impl in impls:
      bare = r['bare'][impl]
      achieved = flops['train'] * bare['images_per_sec']
      rows.append([f'{net} {bare_label(impl)}', bare['images_per_sec'],
                   r['lrn_speedup_vs_' + impls[0]][impl], achieved / 1e9, achieved / gemm,
                   bare['peak_rss_gib']])
    product = r['product']
    rows.append([f'{net} product loop, LRN {product["lrn_impl"]}', product['images_per_sec'],
                 '', '', '', product['peak_rss_gib']])
  common.print_table(['measurement', 'images/s', f'x {impls[0]}', 'GFLOP/s', 'of GEMM',
                      'peak GiB'], rows)
  print()
  for net, r in results['nets'].items():
    flops = r['flops_per_image']
    line = (f'{net}: {flops["forward"] / 1e9:.3f} GFLOP forward, {flops["train"] / 1e9:.3f} '
            f'GFLOP training per image')
    if 'loop_over_bare' in r:
      ratio = r['loop_over_bare']
      line += (f'; product loop / bare step = {ratio:.3f} '
               f'({"meets" if ratio >= TARGET_LOOP_RATIO else "misses"} >= {TARGET_LOOP_RATIO})')
    print(line)
    per_round = [('product loop / bare step', r.get('loop_over_bare_rounds', ()))]
    per_round += [(f'{bare_label(impl)} / {impls[0]}', ratios)
                  for impl, ratios in r['lrn_speedup_rounds_vs_' + impls[0]].items()
                  if impl != impls[0]]
    for what, ratios in per_round:
      if len(ratios) > 1:
        print(f'{net}: {what}, per round: ' + ', '.join(f'{x:.3f}' for x in ratios))
  report_precisions(results, impls)


def report_precisions(results, impls):
  """Every precision's images/s and its ratios over the baseline (the first measured)."""
  measured = results['precisions_measured']
  for name, why in results['precisions_not_measurable'].items():
    print(f'{name}: not measurable on this machine ({why})')
  for name in results['precisions_emulated']:
    print(f'{name}: EMULATED (--allow-emulated): its figures are not the hardware\'s')
  if len(measured) < 2:
    return
  base = measured[0]
  rows = []
  for net, r in results['nets'].items():
    for p in measured:
      figures = r['precisions'][p]
      speedups = figures.get('speedup_over_baseline', {})
      for impl in impls:
        label = bare_label(impl)
        rows.append([f'{net} {label}, {p}', figures['bare'][impl]['images_per_sec'],
                     speedups.get(label, 1.0), ''])
      rows.append([f'{net} product loop, {p}', figures['product']['images_per_sec'],
                   speedups.get('product loop', 1.0), figures.get('loop_over_bare', '')])
  print()
  common.print_table(['measurement', 'images/s', f'x {base}', 'loop / bare'], rows)
  for net, r in results['nets'].items():
    for p in measured[1:]:
      figures = r['precisions'][p]
      speedup = figures['speedup_over_baseline']['product loop']
      line = f'{net}: product loop {p} / {base} = {speedup:.3f}'
      if net == 'imagenet':
        line += (f' ({"meets" if speedup >= TARGET_PRECISION_SPEEDUP else "misses"} >= '
                 f'{TARGET_PRECISION_SPEEDUP})')
      if 'loop_over_bare' in figures:
        ratio = figures['loop_over_bare']
        line += (f'; {p} loop / bare = {ratio:.3f} '
                 f'({"meets" if ratio >= TARGET_LOOP_RATIO else "misses"} >= '
                 f'{TARGET_LOOP_RATIO})')
      print(line)


if __name__ == '__main__':
  main()
