"""Serving: the exported SavedModel against the bare forward pass.

For each net, a checkpoint of freshly initialised weights (one SGD step by the product's
Estimator) is exported with `export.export_saved_model` (JPEG/PNG bytes in, the evaluation
preprocessing in the graph) and loaded with `tf.saved_model.load`. Measured, at batch 1
(latency: median and 90th percentile of --repeats calls) and at batch --batch (images/s),
every case called in turn (`common.time_interleaved`), so all see the same machine load:

  SavedModel session      the export loaded into a tf.compat.v1 Session
                           (`saved_model.loader.load`, tag 'serve') and its 'serving_default'
                           outputs fetched with `session.run`, fed encoded JPEGs: decode,
                           resize to the stored size, mean, centre crop, the net, softmax and
                           top-5. This is how TF Serving runs a SavedModel (a C++ Session over
                           the MetaGraph), so it is the figure that counts.
  savedmodel, JPEG bytes   the same signature through `tf.saved_model.load` (the Python/eager
                           function path a Python user would call)
  savedmodel, float input  signature 'float_images:serving_default' fed the same image
                           already preprocessed (the same graph without the decode)
  bare forward pass        a plain tf.compat.v1 graph of the same net (`build_alexnet`,
                           training=False) restored from the same checkpoint, `session.run`
                           of the logits on the same preprocessed input

The JPEG is an image of the converted dataset at its stored size (256x256 or 32x32), so
the resize is an identity; a full-size photo is timed too (the decode and resize of a
512x512 upload; --no-photo-jpeg skips it). The ratio of the SavedModel session's batch-1
latency with JPEG bytes to the bare forward pass is the target (<= 1.1x).

With --precisions fp32,bf16 (the default) the same checkpoint is also exported with
`export --precision bf16` and served in a Session the same way, interleaved with the rest:
its batch-1 latency and batch --batch throughput against the fp32 export's (the bf16 export
option pays where the batch-64 throughput is higher). Precisions the machine has no hardware
for are reported as not measurable (bf16 without avx512_bf16/amx_bf16).

  python benchmarks/bench_serving.py --json benchmarks/results/serving.json   # ~2 minutes
  python benchmarks/bench_serving.py --smoke
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import common  # noqa: E402  (imports alexnet_tf before TensorFlow)
from summarize import SERVING_LABELS  # noqa: E402  (TensorFlow-free)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1
TARGET_LATENCY_RATIO = 1.1


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', type=int, default=64, help='the throughput batch size')
  parser.add_argument('--repeats', type=int, default=200, help='timed batch-1 calls per case')
  parser.add_argument('--batch-repeats', type=int, default=5, help='timed large-batch calls')
  parser.add_argument('--no-photo-jpeg', dest='photo_jpeg', action='store_false',
                      help='skip the full-size photo upload')
  common.add_common_args(parser)
  args = parser.parse_args(argv)
  if args.smoke:
    common.apply_common_smoke(args)
    args.batch, args.repeats, args.batch_repeats = 4, 3, 1
  return args


def first_jpegs(data_dir: str, count: int):
  """The first `count` encoded images of the validation split (as stored: JPEG)."""
  from alexnet_tf import input_pipeline, records  # pylint: disable=import-outside-toplevel
  split = records.VALIDATION if records.VALIDATION in records.read_metadata(
      data_dir).counts else records.TRAIN
  dataset = tf.data.TFRecordDataset(records.shard_files(data_dir, split)[:1])
  encoded = [input_pipeline.parse_example(s)[0].numpy() for s in dataset.take(count)]
  return [encoded[i % len(encoded)] for i in range(count)]


def photo_jpeg() -> bytes:
  """A full-size photograph as a client would upload it (astronaut, 512x512, quality 90)."""
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  Image.fromarray(common.sample_photos(['astronaut'])[0]).save(buffer, 'JPEG', quality=90)
  return buffer.getvalue()


def latency_stats(times):
  ordered = sorted(times)
  return {'median_ms': 1e3 * statistics.median(ordered),
          'p90_ms': 1e3 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
          'min_ms': 1e3 * ordered[0], 'calls': len(ordered)}


def _session_signature(path: str, signature: str, input_key: str, session_config):
  """A function feeding `input_key` of a SavedModel signature in a tf.compat.v1 Session and
  returning its outputs (NumPy), the way TF Serving's C++ runtime executes the MetaGraph."""
  graph = tf.Graph()
  session = tf1.Session(graph=graph, config=session_config)
  with graph.as_default():
    meta_graph = tf1.saved_model.loader.load(session, ['serve'], path)
  signature_def = meta_graph.signature_def[signature]
  input_name = signature_def.inputs[input_key].name
  outputs = {key: info.name for key, info in signature_def.outputs.items()}
  return lambda values: session.run(outputs, {input_name: values})


def measure_net(net: str, data_dir: str, work_dir: str, batch: int, repeats: int,
                batch_repeats: int, with_photo: bool, other_precisions=()):
  """All the serving measurements of one net, in this process (see the module docstring).
  `other_precisions`: exported and served besides the fp32 export."""
  # pylint: disable=import-outside-toplevel
  from alexnet_tf import estimator as estimator_lib
  from alexnet_tf import decoding, eval_crops, export, input_pipeline, lrn
  from alexnet_tf.model import build_alexnet
  from alexnet_tf.model_fn import portable_model_config
  metadata = common.records.read_metadata(data_dir)
  config = common.net_config(net, num_classes=metadata.num_classes)
  model_dir = tempfile.mkdtemp(prefix=f'serving_{net}_', dir=work_dir)
  try:
    estimator, metadata = common.make_checkpoint(config, data_dir, model_dir)
    mean = input_pipeline.open_dataset(data_dir, config.data).mean
    path = export.export_saved_model(estimator, config, metadata, mean,
                                     os.path.join(model_dir, 'export'))
    checkpoint = tf1.train.latest_checkpoint(model_dir)

    jpegs = first_jpegs(data_dir, batch)
    stored = metadata.image_size[0]

    def preprocess(encoded):  # what the SavedModel's receiver does, per image
      image = decoding.decode_for_serving(tf.constant(encoded), stored)
      return eval_crops.eval_crops(image, mean, config.data.crop_size, config.data.pad).numpy()

    floats = np.stack([preprocess(j) for j in jpegs])  # [batch, S, S, 3]
    loaded = tf.saved_model.load(path, tags=['serve'])
    serve = loaded.signatures[export.SERVING_SIGNATURE]
    serve_floats = loaded.signatures[export.FLOAT_SERVING_SIGNATURE]
    one_jpeg, all_jpegs = tf.constant(jpegs[:1]), tf.constant(jpegs)
    one_float, all_floats = tf.constant(floats[:1]), tf.constant(floats)

    result = {'export_dir': path, 'batch': batch, 'lrn_impl': config.model.lrn_impl}
    cases = {
        'savedmodel_jpeg': (lambda: serve(**{export.IMAGE_BYTES: one_jpeg}),
                            lambda: serve(**{export.IMAGE_BYTES: all_jpegs})),
        'savedmodel_float': (lambda: serve_floats(**{export.FLOAT_IMAGES: one_float}),
                             lambda: serve_floats(**{export.FLOAT_IMAGES: all_floats})),
    }
    if with_photo:
      photo = tf.constant([photo_jpeg()])
      photos = tf.constant([photo_jpeg()] * batch)
      cases['savedmodel_photo_jpeg'] = (lambda: serve(**{export.IMAGE_BYTES: photo}),
                                        lambda: serve(**{export.IMAGE_BYTES: photos}))
    # The outputs agree (the same weights, the same preprocessing).
    agree = np.max(np.abs(serve(**{export.IMAGE_BYTES: one_jpeg})['logits'].numpy() -
                          serve_floats(**{export.FLOAT_IMAGES: one_float})['logits'].numpy()))

    graph = tf.Graph()
    with graph.as_default():
      images = tf1.placeholder(tf.float32, [None] + list(floats.shape[1:]))
      # The served graph's net: the same LRN as the export (`portable_model_config`).
      net = portable_model_config(estimator_lib.model_config_for(config, metadata))
      logits, _ = build_alexnet(images, net, training=False)
      saver = tf1.train.Saver(tf1.global_variables())
    session = tf1.Session(graph=graph, config=estimator_lib.session_config(config.model))
    with graph.as_default():
      saver.restore(session, checkpoint)
    bare_logits = session.run(logits, {images: floats[:1]})
    agree_bare = np.max(np.abs(bare_logits - serve_floats(
        **{export.FLOAT_IMAGES: one_float})['logits'].numpy()))
    served = _session_signature(path, export.SERVING_SIGNATURE, export.IMAGE_BYTES,
                                estimator_lib.session_config(config.model))
    one_bytes, all_bytes = np.array(jpegs[:1], dtype=object), np.array(jpegs, dtype=object)
    cases['savedmodel_session_jpeg'] = (lambda: served(one_bytes), lambda: served(all_bytes))
    agree_session = np.max(np.abs(served(one_bytes)['logits'] -
                                  serve(**{export.IMAGE_BYTES: one_jpeg})['logits'].numpy()))
    cases['bare_forward'] = (lambda: session.run(logits, {images: floats[:1]}),
                             lambda: session.run(logits, {images: floats}))
    result['precision_probability_difference'] = {}
    for name in other_precisions:
      exporter = estimator_lib.make_estimator(config, metadata, model_dir, purpose=lrn.EXPORT,
                                              export_precision=name)
      other = _session_signature(
          export.export_saved_model(exporter, config, metadata, mean,
                                    os.path.join(model_dir, f'export_{name}')),
          export.SERVING_SIGNATURE, export.IMAGE_BYTES,
          estimator_lib.session_config(config.model))
      cases[f'savedmodel_session_jpeg_{name}'] = (
          lambda other=other: other(one_bytes), lambda other=other: other(all_bytes))
      result['precision_probability_difference'][name] = float(np.max(np.abs(
          other(all_bytes)['probabilities'] - served(all_bytes)['probabilities'])))

    singles = common.time_interleaved({name: c[0] for name, c in cases.items()}, warmup=5,
                                      repeats=repeats)
    batches = common.time_interleaved({name: c[1] for name, c in cases.items()}, warmup=1,
                                      repeats=batch_repeats)
    for name in cases:
      result[name] = {'batch1': latency_stats(singles[name]),
                      'batch_images_per_sec': batch / statistics.median(batches[name])}
    session.close()
    bare = result['bare_forward']['batch1']['median_ms']
    result['latency_ratio_jpeg_vs_bare'] = (
        result['savedmodel_session_jpeg']['batch1']['median_ms'] / bare)
    result['latency_ratio_loaded_jpeg_vs_bare'] = (
        result['savedmodel_jpeg']['batch1']['median_ms'] / bare)
    result['latency_ratio_float_vs_bare'] = (
        result['savedmodel_float']['batch1']['median_ms'] / bare)
    result['max_logit_difference'] = {'jpeg_vs_float_signature': float(agree),
                                      'session_vs_loaded': float(agree_session),
                                      'float_signature_vs_bare': float(agree_bare)}
    return result
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)


def measure(net, data_dir, work_dir, args, other_precisions):
  print(f'{net}: export and serving ...', flush=True)
  return common.call(measure_net, not args.no_isolate, net, data_dir, work_dir, args.batch,
                     args.repeats, args.batch_repeats, args.photo_jpeg, other_precisions)


def main(argv=None):
  args = parse_args(argv)
  from alexnet_tf import recipes  # pylint: disable=import-outside-toplevel
  precisions, unmeasurable, emulated = common.measurable_precisions(
      args, recipes.IMAGENET_MODEL.tower_devices)
  results = common.new_results(
      'bench_serving', args, targets={'latency_ratio_jpeg_vs_bare': TARGET_LATENCY_RATIO},
      precisions_measured=precisions, precisions_not_measurable=unmeasurable,
      precisions_emulated=emulated)
  others = [p for p in precisions if p != 'fp32']
  results['nets'] = common.run_nets(args, 'bench_serving_', measure, args, others)
  report(results)
  common.write_json(args.json, results)
  return results


def report(results):
  batch = results['settings']['batch']
  print(f'\n{common.machine_line(results)}')
  rows = []
  for net, r in results['nets'].items():
    bare = r['bare_forward']['batch1']['median_ms']
    for key, label in SERVING_LABELS.items():
      if key in r:
        rows.append([f'{net}: {label}', r[key]['batch1']['median_ms'],
                     r[key]['batch1']['p90_ms'], r[key]['batch1']['median_ms'] / bare,
                     r[key]['batch_images_per_sec']])
  common.print_table(['measurement', 'batch-1 ms (median)', 'p90 ms', 'x bare',
                      f'batch-{batch} images/s'], rows)
  for net, r in results['nets'].items():
    ratio = r['latency_ratio_jpeg_vs_bare']
    print(f'{net}: SavedModel session batch-1 latency (JPEG in) / bare forward = {ratio:.3f} '
          f'({"meets" if ratio <= TARGET_LATENCY_RATIO else "misses"} <= '
          f'{TARGET_LATENCY_RATIO})')
  report_precisions(results)


def report_precisions(results):
  """The other precisions' exports against the fp32 export, at batch 1 and --batch."""
  batch = results['settings']['batch']
  for name, why in results['precisions_not_measurable'].items():
    print(f'{name} export: not measurable on this machine ({why})')
  for name in results['precisions_emulated']:
    print(f'{name} export: EMULATED (--allow-emulated): its figures are not the hardware\'s')
  for net, r in results['nets'].items():
    fp32 = r['savedmodel_session_jpeg']
    for name, difference in r['precision_probability_difference'].items():
      other = r[f'savedmodel_session_jpeg_{name}']
      latency = other['batch1']['median_ms'] / fp32['batch1']['median_ms']
      throughput = other['batch_images_per_sec'] / fp32['batch_images_per_sec']
      print(f'{net}: {name} export / fp32 export: batch-1 latency x{latency:.2f}, batch-{batch} '
            f'throughput x{throughput:.2f} (export --precision {name} '
            f'{"pays" if throughput > 1 else "does not pay"} for throughput serving); largest '
            f'probability difference {difference:.3g}')


if __name__ == '__main__':
  main()
