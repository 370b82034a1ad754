"""`python -m alexnet_tf.evaluate`: top-1 and top-5 error, centre crop and 10-crop.

From a training run's checkpoint (`--model-dir`, default the best checkpoint) or from an
exported SavedModel (`--saved-model`), on a split of a converted dataset. Prints a table and
writes JSON. Compare 10-crop numbers with the paper's 10-crop numbers, centre-crop numbers
with the paper's single-crop figures (a common mix-up). Whatever the
data, the images get the model's own training mean.
"""

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

from alexnet_tf import cli_logging  # first: quiets TensorFlow's C++ logs before it loads

import numpy as np
import tensorflow as tf

from alexnet_tf import export, input_pipeline, model_fn, precision, records, rundir
from alexnet_tf import estimator as estimator_lib

log = logging.getLogger('alexnet_tf.evaluate')

CENTRE = 'centre_crop'
TEN_CROP = 'ten_crop'


def evaluate_checkpoint(model_dir: str, checkpoint: str = 'best', data_dir: Optional[str] = None,
                        split: str = records.VALIDATION,
                        batch_size: int = 100) -> Dict[str, Dict[str, float]]:
  """{'centre_crop': {...}, 'ten_crop': {...}} with top1_error, top5_error, cross_entropy
  (of the prediction: the averaged softmax for 10-crop) and examples.

  On any `data_dir` the images get the run's training mean (`rundir.training_mean`), the
  one the model learned with, not the mean of the data being evaluated.
  """
  run = rundir.load_run(model_dir, data_dir)
  path = rundir.resolve_checkpoint(model_dir, checkpoint)
  rundir.check_classes(path, run.config, run)
  source = input_pipeline.open_dataset(run.data_dir, run.config.data,
                                       mean=rundir.training_mean(model_dir))
  estimator = estimator_lib.make_estimator(precision.evaluable_here(run.config), run.metadata,
                                           model_dir)
  results = {}
  for name, ten_crop in ((CENTRE, False), (TEN_CROP, True)):
    input_fn = input_pipeline.make_input_fn(source, split, run.config.data, batch_size,
                                            training=False, ten_crop=ten_crop)
    metrics = estimator.evaluate(input_fn, checkpoint_path=path, name=f'{split}_{name}')
    results[name] = _errors(metrics['top1_accuracy'], metrics['top5_accuracy'],
                            metrics['cross_entropy'], run.metadata.counts[split])
    results[name]['per_class'] = per_class_rows(metrics, run.metadata.classes)
  results['checkpoint'] = path
  return results


def evaluate_saved_model(saved_model_dir: str, data_dir: str, split: str = records.VALIDATION,
                         batch_size: int = 100) -> Dict[str, Dict[str, float]]:
  """The same table from a SavedModel, through its float-image signature.

  The crops get the training mean stored with the export (`export.read_exported_mean`);
  an export from before it was stored gets the mean of `data_dir`, with a warning.
  """
  config, classes = export.read_exported_config(saved_model_dir)
  mean = export.read_exported_mean(saved_model_dir)
  if mean is None and config.data.subtract_mean != 'none':
    log.warning('%s stores no training mean (exported by an older alexnet_tf): subtracting '
                'the mean of %s, which is right only if the model trained on its data',
                saved_model_dir, data_dir)
  source = input_pipeline.open_dataset(data_dir, config.data, mean=mean)
  model = tf.saved_model.load(saved_model_dir, tags=['serve'])
  predict = model.signatures[export.FLOAT_SERVING_SIGNATURE]
  results = {}
  for name, ten_crop in ((CENTRE, False), (TEN_CROP, True)):
    dataset = input_pipeline.make_dataset(source, split, config.data, batch_size,
                                          training=False, ten_crop=ten_crop)
    top1 = top5 = count = 0
    cross_entropy = 0.0
    per_class = model_fn.per_class_metrics(len(classes))
    for features, labels in dataset:
      images = features['image']
      crops = images.shape[1] if ten_crop else 1
      flat = tf.reshape(images, [-1] + images.shape[-3:].as_list())
      probabilities = predict(**{export.FLOAT_IMAGES: flat})['probabilities'].numpy()
      probabilities = probabilities.reshape(len(labels), crops, -1).mean(axis=1)
      model_fn.update_per_class_metrics(per_class, labels, tf.constant(probabilities))
      top = np.argsort(-probabilities, axis=1)[:, :5]
      labels = labels.numpy()
      top1 += int(np.sum(top[:, 0] == labels))
      top5 += int(np.sum(np.any(top == labels[:, None], axis=1)))
      # As model_fn's metric: the cross-entropy of the prediction, floored at 1e-12.
      cross_entropy -= float(np.sum(np.log(np.maximum(
          probabilities[np.arange(len(labels)), labels], 1e-12))))
      count += len(labels)
    results[name] = _errors(top1 / count, top5 / count, cross_entropy / count, count)
    results[name]['per_class'] = per_class_rows(
        {key: metric.result().numpy() for key, metric in per_class.items()}, classes)
  results['saved_model'] = saved_model_dir
  return results


def _errors(top1_accuracy, top5_accuracy, cross_entropy, examples):
  return {'top1_error': 1.0 - float(top1_accuracy), 'top5_error': 1.0 - float(top5_accuracy),
          'cross_entropy': float(cross_entropy), 'examples': int(examples)}


def per_class_rows(metrics, classes: Sequence[str]) -> List[Dict[str, object]]:
  """One row per class from the per-class metrics of `model_fn.per_class_metrics`: its name,
  examples, top-1 error (the share of its images predicted as another class) and F1."""
  confusion = np.asarray(metrics[model_fn.PER_CLASS_CONFUSION])  # [classes, 2, 2]
  false_negatives, true_positives = confusion[:, 1, 0], confusion[:, 1, 1]
  examples = false_negatives + true_positives
  errors = false_negatives / np.maximum(examples, 1)
  return [{'class': name, 'examples': int(n), 'top1_error': float(e), 'f1': float(f)}
          for name, n, e, f in zip(classes, examples, errors, metrics[model_fn.PER_CLASS_F1])]


def format_table(results) -> str:
  lines = ['| evaluation | top-1 error | top-5 error | examples |', '|---|---|---|---|']
  for name in (CENTRE, TEN_CROP):
    r = results[name]
    lines.append(f'| {name.replace("_", " ")} | {100 * r["top1_error"]:.2f}% | '
                 f'{100 * r["top5_error"]:.2f}% | {r["examples"]} |')
  return '\n'.join(lines)


def format_per_class(rows: List[Dict[str, object]], limit: int = 20) -> str:
  """The per-class table of the centre crop; with more than `limit` classes, the worst."""
  shown = sorted(rows, key=lambda r: -r['top1_error'])[:limit] if len(rows) > limit else rows
  title = f'{limit} classes with the highest top-1 error' if len(rows) > limit else 'per class'
  lines = [f'| {title} | examples | top-1 error | F1 |', '|---|---|---|---|']
  lines += [f'| {r["class"]} | {r["examples"]} | {100 * r["top1_error"]:.2f}% | {r["f1"]:.3f} |'
            for r in shown]
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m alexnet_tf.evaluate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--model-dir', help='a training run (reads its run.json)')
  source.add_argument('--saved-model', help='an exported SavedModel directory')
  parser.add_argument('--checkpoint', default='best', help='with --model-dir: "best" '
                      '(default), "latest", a directory such as cycles/epoch-37, or a '
                      'checkpoint path')
  parser.add_argument('--data-dir', help='converted dataset (default: the run\'s; required '
                      'with --saved-model)')
  parser.add_argument('--split', default=records.VALIDATION, choices=records.SPLITS)
  parser.add_argument('--batch-size', type=int, default=100)
  parser.add_argument('--output', help='JSON results file (default: MODEL_DIR/eval_SPLIT.json '
                      'or SAVED_MODEL/../eval_SPLIT.json)')
  parser.add_argument('--verbose', action='store_true', help='the traceback of an error too')
  args = parser.parse_args(argv)
  if args.saved_model and not args.data_dir:
    parser.error('--saved-model needs --data-dir')
  cli_logging.setup()
  try:
    if args.model_dir:
      results = evaluate_checkpoint(args.model_dir, args.checkpoint, args.data_dir, args.split,
                                    args.batch_size)
      output = args.output or os.path.join(args.model_dir, f'eval_{args.split}.json')
    else:
      results = evaluate_saved_model(args.saved_model, args.data_dir, args.split,
                                     args.batch_size)
      output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.saved_model)),
                                           f'eval_{args.split}.json')
  except (OSError, ValueError) as e:
    return cli_logging.fail(log, e, args.verbose)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    data_dir = args.data_dir or rundir.load_run(args.model_dir).data_dir
    return cli_logging.fail(log, ValueError(input_pipeline.describe_data_error(e, data_dir)),
                            args.verbose)
  results['split'] = args.split
  print(format_table(results))
  print(format_per_class(results[CENTRE]['per_class']))
  with open(output, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'written to {output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
