"""Markdown tables of the benchmark results JSON (for benchmarks/README.md).

  python benchmarks/summarize.py [--results benchmarks/results]

Reads train*.json, serving*.json, eval*.json and lrn*.json (whichever exist, in name order) and
prints the tables with the machine, date and TF version of each run, and the targets
marked met or missed.
"""

import argparse
import json
import os
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(directory: str, name: str) -> Optional[dict]:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _machine(results: dict) -> str:
  m = results['machine']
  return (f'{m["cpu"]}, {m["cores"]} cores ({", ".join(m.get("isa", []))}), '
          f'TF {m["tensorflow"]}, {m["date"]}')


def _verdict(ok: bool) -> str:
  return 'met' if ok else '**missed**'


def train_tables(results: dict) -> List[str]:
  lines = [f'Training, batch {results["settings"]["batch_size"]} ({_machine(results)}):', '',
           '| net | measurement | images/s | GFLOP/s | of GEMM | peak RSS GiB |',
           '|---|---|---|---|---|---|']
  gemm = results['gemm']['flops_per_sec']
  targets = results['targets']
  verdicts = []
  for net, r in results['nets'].items():
    train_flops = r['flops_per_image']['train']
    baseline = next(iter(r['bare']))
    for impl, bare in r['bare'].items():
      achieved = train_flops * bare['images_per_sec']
      label = '(a) ' + bare_label(impl, quote='`')
      lines.append(f'| {net} | {label} | {bare["images_per_sec"]:.1f} | '
                   f'{achieved / 1e9:.1f} | {achieved / gemm:.0%} | {bare["peak_rss_gib"]:.2f} |')
    product = r['product']
    lines.append(f'| {net} | (b) product loop, LRN `{product["lrn_impl"]}` | '
                 f'{product["images_per_sec"]:.1f} | | | {product["peak_rss_gib"]:.2f} |')
    ratio = r.get('loop_over_bare')
    if ratio is not None:
      verdicts.append(f'- {net}: (b)/(a) = {ratio:.3f}, target >= {targets["loop_over_bare"]}: '
                      f'{_verdict(ratio >= targets["loop_over_bare"])}')
    rounds = r.get('lrn_speedup_rounds_vs_' + baseline, {})
    for impl, speedup in r['lrn_speedup_vs_' + baseline].items():
      if len(rounds.get(impl, ())) > 1 and impl != baseline:
        verdicts.append(f'- {net}: {bare_label(impl)} / `{baseline}`, per interleaved round: '
                        + ', '.join(f'{x:.3f}' for x in rounds[impl]) + ' (median below)')
      if impl == NO_LRN:
        verdicts.append(f'- {net}: bare step without LRN / `{baseline}` = {speedup:.3f} (the '
                        f'ceiling of any LRN implementation)')
      elif impl != baseline:
        verdicts.append(f'- {net}: bare step with LRN `{impl}` / `{baseline}` = {speedup:.3f}, '
                        f'target >= {targets["lrn_speedup"]}: '
                        f'{_verdict(speedup >= targets["lrn_speedup"])}')
    peak = r['peak_rss_gib_training']
    verdicts.append(f'- {net}: peak resident memory of the training loop {peak:.2f} GiB, '
                    f'target <= {targets["peak_rss_gib"]}: '
                    f'{_verdict(peak <= targets["peak_rss_gib"])}')
    verdicts.append(f'- {net}: {r["flops_per_image"]["forward"] / 1e9:.3f} GFLOP forward, '
                    f'{train_flops / 1e9:.3f} GFLOP per training image')
  lines += ['', f'fp32 GEMM ({results["gemm"]["n"]}^3, best of 5): {gemm / 1e9:.1f} GFLOP/s', '']
  return lines + verdicts + ['']


# bench_train's pseudo LRN implementation: the net with its LRN layers removed (no longer
# AlexNet), the ceiling that a free LRN would reach.
NO_LRN = 'none'


def bare_label(impl: str, quote: str = '') -> str:
  """'bare step, LRN banded_grad' (the name inside `quote`), or the no-LRN ceiling's label."""
  if impl == NO_LRN:
    return 'bare step without LRN (ceiling)'
  return f'bare step, LRN {quote}{impl}{quote}'


# The rows of bench_serving's JSON, in table order (also used by bench_serving's report).
SERVING_LABELS = {
    'savedmodel_session_jpeg': 'SavedModel in a Session (as TF Serving), JPEG bytes',
    'savedmodel_jpeg': 'SavedModel via tf.saved_model.load, JPEG bytes',
    'savedmodel_photo_jpeg': 'SavedModel, 512x512 photo JPEG',
    'savedmodel_float': 'SavedModel, preprocessed floats',
    'bare_forward': 'bare forward pass (session)',
}


def serving_tables(results: dict) -> List[str]:
  batch = results['settings']['batch']
  lines = [f'Serving ({_machine(results)}):', '',
           f'| net | path | batch-1 ms (median) | p90 ms | x bare | batch-{batch} images/s |',
           '|---|---|---|---|---|---|']
  verdicts = []
  target = results['targets']['latency_ratio_jpeg_vs_bare']
  for net, r in results['nets'].items():
    bare = r['bare_forward']['batch1']['median_ms']
    for key, label in SERVING_LABELS.items():
      if key in r:
        b1 = r[key]['batch1']
        lines.append(f'| {net} | {label} | {b1["median_ms"]:.1f} | {b1["p90_ms"]:.1f} | '
                     f'{b1["median_ms"] / bare:.2f} | {r[key]["batch_images_per_sec"]:.0f} |')
    ratio = r['latency_ratio_jpeg_vs_bare']
    verdicts.append(f'- {net}: batch-1 latency, SavedModel in a Session with JPEG in / bare '
                    f'forward = {ratio:.3f}, target '
                    f'<= {target}: {_verdict(ratio <= target)}')
  return lines + [''] + verdicts + ['']


def eval_tables(results: dict) -> List[str]:
  lines = [f'Evaluation, batches of {results["settings"]["batch_size"]} images '
           f'({_machine(results)}):', '',
           '| net | crops | images/s | crops/s |', '|---|---|---|---|']
  for net, r in results['nets'].items():
    for name in ('ten_crop', 'centre_crop'):
      lines.append(f'| {net} | {name.replace("_", "-")} | {r[name]["images_per_sec"]:.1f} | '
                   f'{r[name]["crops_per_sec"]:.0f} |')
  return lines + ['']


def lrn_tables(results: dict) -> List[str]:
  lines = [f'LRN alone, one tower ({_machine(results)}):', '',
           '| LRN input | impl | forward ms | forward+backward ms | speed-up |',
           '|---|---|---|---|---|']
  for name, case in results['shapes'].items():
    timings = case['impls']
    base = next(iter(timings.values()))['forward_backward_ms']
    for impl, t in timings.items():
      lines.append(f'| {name} {case["shape"]} | `{impl}` | {t["forward_ms"]:.1f} | '
                   f'{t["forward_backward_ms"]:.1f} | {base / t["forward_backward_ms"]:.2f} |')
  return lines + ['']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  args = parser.parse_args(argv)
  lines = []
  names = sorted(os.listdir(args.results)) if os.path.isdir(args.results) else []
  for prefix, tables in (('train', train_tables), ('serving', serving_tables),
                         ('eval', eval_tables), ('lrn', lrn_tables)):
    for name in names:
      if name.startswith(prefix) and name.endswith('.json'):
        lines += [f'`results/{name}`:', ''] + tables(_load(args.results, name))
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
