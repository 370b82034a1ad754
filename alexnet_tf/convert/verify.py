"""Checks stored-as-is JPEGs with TensorFlow's decoder, in the parent process only.

Pillow's libjpeg reading is lenient where TensorFlow's is not: a JPEG whose end marker is
overwritten decodes in Pillow and fails in training with `jpeg::Uncompress failed`. The
workers must stay free of TensorFlow (see `worker`), so the parent, which imports it anyway
to write the shards, decodes the records that keep a source file's bytes (`worker.ChunkResult
.verbatim`) with `decoding.decode_image`, the function training and evaluation decode with.
Re-encoded images are Pillow's own JPEGs and PNGs and need no check. The decodes run on
TensorFlow's thread pool, beside the workers, so the check costs cores, not the parent's time.
"""

from typing import Dict, Sequence

_BATCH = 1024  # indices fetched per session call (a chunk is `writer.CHUNK_SIZE` images)


class JpegVerifier:
  """Decodes batches of JPEG files as training would; one private graph and session."""

  def __init__(self):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from alexnet_tf import decoding
    tf1 = tf.compat.v1
    self._errors = tf.errors
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._files = tf1.placeholder(tf.string, [None])
      files = tf.data.Dataset.from_tensor_slices(
          (tf.range(tf.size(self._files, out_type=tf.int64)), self._files))
      # Each element is an index; a file TensorFlow cannot decode drops out of the stream.
      decoded = files.map(lambda index, data: (index, tf.shape(decoding.decode_image(data))),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      survivors = decoded.ignore_errors().map(lambda index, _: index).batch(_BATCH)
      self._iterator = tf1.data.make_initializable_iterator(survivors)
      self._survivors = self._iterator.get_next()
      self._one = tf1.placeholder(tf.string, [])
      self._decode_one = tf.shape(decoding.decode_image(self._one))
    self._session = tf1.Session(graph=self._graph)

  def failures(self, files: Sequence[bytes]) -> Dict[int, str]:
    """{index in `files`: why TensorFlow cannot decode it} (empty when all decode)."""
    if not files:
      return {}
    self._session.run(self._iterator.initializer, {self._files: list(files)})
    survivors = set()
    try:
      while True:
        survivors.update(self._session.run(self._survivors).tolist())
    except self._errors.OutOfRangeError:
      pass
    return {index: self._reason(files[index]) for index in range(len(files))
            if index not in survivors}

  def _reason(self, data: bytes) -> str:
    try:
      self._session.run(self._decode_one, {self._one: data})
    except self._errors.OpError as error:
      lines = [line.strip() for line in error.message.splitlines() if line.strip()]
      noise = ('Graph execution error', 'Detected at node', 'Node:', '[[', 'File "',
               '<stack traces')
      useful = [line for line in lines if not line.startswith(noise)]
      detail = (useful or lines or ['no detail'])[0]
      return f'corrupt: TensorFlow\'s JPEG decoder, which training uses, fails: {detail}'
    return 'corrupt: TensorFlow\'s JPEG decoder failed on it once'  # a flaky decode

  def close(self) -> None:
    self._session.close()
