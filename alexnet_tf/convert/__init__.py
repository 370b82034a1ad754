"""Dataset converters: CIFAR-10 pickles, ILSVRC-2012 and class-folder trees to TFRecords.

Every mode writes the format of `alexnet_tf.records`: sharded TFRecord files of
`tf.train.Example`s plus `dataset.json`, `labels.txt`, `mean_image.npy` (when all images
share one size) and `skipped.tsv` (unusable images and why).

The public entry points, importable without TensorFlow:

  cifar10.convert(source, output_dir, ...)      the official python-pickle archive
  imagenet.convert(root, output_dir, ...)       the ILSVRC-2012 train/ and val/ layout
  folder.convert(root, output_dir, ...)         any <root>/<class>/<image> tree
  download.download(url, dest_path, md5=...)    resumable, checksummed downloads
  cli.main(argv)                                `python tools/make_tfrecords.py`

Each `convert` returns the `records.DatasetMetadata` it wrote and raises
`errors.ConversionError` (a ValueError) for problems with the source data or the arguments.
This package imports TensorFlow only when the first shard is written, so the worker
processes that decode images never pay for it.
"""
