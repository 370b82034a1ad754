"""Writes the splits of a dataset into sharded TFRecords: the engine behind every mode.

Work is cut into chunks of `CHUNK_SIZE` images of one shard. Worker processes (spawned, so
this is safe from a process that already runs TensorFlow) decode, validate and encode the
images and serialize the Examples; the parent receives the chunks in order and appends them
to the shard's temporary file with `tf.io.TFRecordWriter`. A shard is renamed into place
once its last chunk is written, after its state file (see `shards`), so a killed
conversion resumes from the shards already finished. The output does not depend on the
number of workers.
"""

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import time
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tqdm

from alexnet_tf import dirlock
from alexnet_tf import records
from alexnet_tf.convert import names
from alexnet_tf.convert import shards
from alexnet_tf.convert import stats
from alexnet_tf.convert import verify
from alexnet_tf.convert import worker
from alexnet_tf.convert.errors import ConversionError

SKIPPED_FILE = 'skipped.tsv'  # split, filename, reason of every unusable image
LOCK_FILE = '.lock'  # held (flock) by the one conversion writing the output directory
CHUNK_SIZE = 128  # images per worker task: amortises the IPC, keeps the progress bar smooth
_SUMMARY_LINES = 20  # skipped images listed in the log; all of them are in SKIPPED_FILE
_METADATA_FILES = (records.METADATA_FILE, records.LABELS_FILE, records.MEAN_IMAGE_FILE,
                   SKIPPED_FILE)

log = logging.getLogger(__name__)

# (split, filename, reason)
Skipped = Tuple[str, str, str]


class OutputDirLockedError(ConversionError, dirlock.DirectoryLockedError):
  """Another conversion is writing the output directory."""


def default_workers() -> int:
  """The number of cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def write_dataset(output_dir: str, *, name: str, classes: Sequence[str],
                  splits: Mapping[str, Sequence[worker.Item]], num_shards: Mapping[str, int],
                  root: Optional[str] = None,
                  options: worker.EncodeOptions = worker.EncodeOptions(),
                  workers: Optional[int] = None, seed: int = 0, source: str = '',
                  overwrite: bool = False, progress: bool = True,
                  extra_files: Optional[Mapping[str, str]] = None) -> records.DatasetMetadata:
  """Converts the images of each split and writes the dataset's metadata.

  Args:
    output_dir: created if missing. Finished shards of an earlier run with the same inputs
      are kept (resume).
    name: the dataset's name in dataset.json.
    classes: class names; label i is classes[i].
    splits: the images of records.TRAIN / VALIDATION / TEST; empty splits are left out.
    num_shards: shards per split (fewer if a split has fewer images).
    root: the directory the filenames of file items are relative to.
    options: how images are stored.
    workers: processes that encode images; 1 encodes in this process; None: the core count.
    seed: seeds the assignment of images to shards.
    source: where the images came from, recorded in dataset.json.
    overwrite: delete everything an earlier conversion left in `output_dir` first.
    progress: show a progress bar.
    extra_files: {file name: text} written into `output_dir` before dataset.json.

  Returns:
    The metadata written to dataset.json.

  Raises:
    ConversionError: no images at all, bad arguments, a class name that labels.txt cannot
      hold, `output_dir` cannot be written, holds shards of another conversion (and
      `overwrite` is False) or is being written by another conversion
      (OutputDirLockedError).
  """
  workers = default_workers() if workers is None else workers
  if workers < 1:
    raise ConversionError(f'workers must be >= 1, got {workers}')
  unknown = set(splits) - set(records.SPLITS)
  if unknown:
    raise ConversionError(f'unknown splits {sorted(unknown)}; use {records.SPLITS}')
  if not any(splits.values()):
    raise ConversionError(f'{source or output_dir}: no images to convert')
  names.check_class_names(classes, source or output_dir)
  _make_output_dir(output_dir)
  with dirlock.hold(output_dir, LOCK_FILE, 'another conversion',
                    'wait for it to finish or choose another output directory',
                    OutputDirLockedError):
    return _write_locked(output_dir, name, classes, splits, num_shards, root, options, workers,
                         seed, source, overwrite, progress, extra_files or {})


def _make_output_dir(output_dir: str) -> None:
  """Creates `output_dir`; ConversionError naming it if it cannot hold the output."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    probe = os.path.join(output_dir, LOCK_FILE)
    os.close(os.open(probe, os.O_RDWR | os.O_CREAT, 0o644))
  except OSError as error:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
      reason = 'it is a file'
    else:
      reason = error.strerror or str(error)
      if error.filename and os.path.abspath(error.filename) != os.path.abspath(output_dir):
        reason += f' ({error.filename})'
    raise ConversionError(f'{output_dir}: cannot write the conversion there: {reason}'
                          ) from None


def _write_locked(output_dir, name, classes, splits, num_shards, root, options, workers, seed,
                  source, overwrite, progress, extra_files) -> records.DatasetMetadata:
  """`write_dataset`'s work, with the arguments checked and the output directory locked."""
  plans = [plan for split in records.SPLITS if splits.get(split)
           for plan in shards.plan_split(split, splits[split], num_shards[split], seed)]
  _prepare_output_dir(output_dir, plans, overwrite)
  for file_name, text in extra_files.items():
    records.write_atomically(os.path.join(output_dir, file_name), lambda f: f.write(text))

  states, pending = _find_finished(output_dir, plans, root, classes, options)
  if pending:
    # dataset.json says "complete"; it must not describe shards that are being rewritten.
    _remove(os.path.join(output_dir, records.METADATA_FILE))

  start = time.monotonic()
  _write_shards(output_dir, pending, root, tuple(classes), options, workers, progress, states)
  elapsed = time.monotonic() - start

  metadata, mean_image = _metadata(name, classes, plans, states, source)
  skipped = [(plan.split, filename, reason)
             for plan in plans for filename, reason in states[plan.name].skipped]
  _write_skipped(os.path.join(output_dir, SKIPPED_FILE), skipped)
  if mean_image is None:
    _remove(os.path.join(output_dir, records.MEAN_IMAGE_FILE))  # of an earlier conversion
  records.write_metadata(output_dir, metadata, mean_image)
  _log_summary(output_dir, metadata, skipped, sum(len(p.items) for p, _ in pending), elapsed)
  return metadata


def _find_finished(output_dir: str, plans: Sequence[shards.ShardPlan], root: Optional[str],
                   classes: Sequence[str], options: worker.EncodeOptions
                  ) -> Tuple[Dict[str, shards.ShardState], List[Tuple[shards.ShardPlan, str]]]:
  """({shard name: state} of the shards already written, [(plan, fingerprint)] of the rest)."""
  states, pending = {}, []
  for plan in plans:
    fingerprint = plan.fingerprint(root, classes, options)
    state = shards.load_finished(output_dir, plan, fingerprint)
    if state is None:
      pending.append((plan, fingerprint))
    else:
      states[plan.name] = state
  if states:
    log.info('%s: %d of %d shards were already written; converting the other %d',
             output_dir, len(states), len(plans), len(pending))
  return states, pending


def _prepare_output_dir(output_dir: str, plans: Sequence[shards.ShardPlan],
                        overwrite: bool) -> None:
  """Removes temporary files and refuses foreign shards."""
  state_dir = os.path.join(output_dir, shards.STATE_DIR)
  planned = {plan.name for plan in plans}
  foreign = []
  for entry in sorted(os.listdir(output_dir)):
    path = os.path.join(output_dir, entry)
    if entry.endswith(shards.TMP_SUFFIX) and _is_ours(entry[:-len(shards.TMP_SUFFIX)]):
      _remove(path)  # an unfinished file of a killed run: never complete, never read
    elif records.is_shard_name(entry) and (overwrite or entry not in planned):
      foreign.append(entry)
  if overwrite:
    for entry in foreign + list(_METADATA_FILES):
      _remove(os.path.join(output_dir, entry))
    shutil.rmtree(state_dir, ignore_errors=True)
  elif foreign:
    shown = ', '.join(foreign[:3]) + (', ...' if len(foreign) > 3 else '')
    raise ConversionError(
        f'{output_dir} holds {len(foreign)} shards that this conversion would not write '
        f'({shown}): they come from a conversion with other splits or shard counts. Delete '
        f'them, choose another output directory or pass overwrite=True (--overwrite)')
  os.makedirs(state_dir, exist_ok=True)


def _is_ours(entry: str) -> bool:
  """Whether a file name is one the converter writes (a shard or a metadata file)."""
  return records.is_shard_name(entry) or entry in _METADATA_FILES


class _ShardFile:
  """A shard being written: records go to `<shard>.tmp` until `finish` renames it."""

  def __init__(self, output_dir: str, plan: shards.ShardPlan, fingerprint: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self.plan = plan
    self.path = os.path.join(output_dir, plan.name)
    self.state_path = shards.state_path(output_dir, plan.name)
    self.state = shards.ShardState(fingerprint)
    self.remaining = len(plan.items)
    self._tmp = self.path + shards.TMP_SUFFIX
    self._writer = tf.io.TFRecordWriter(self._tmp)

  def add(self, result: worker.ChunkResult) -> None:
    for record in result.records:
      self._writer.write(record)
    self.state.add(result)
    self.remaining -= result.num_items

  def finish(self) -> shards.ShardState:
    """Flushes the shard, saves its state, then renames it: the order that makes resume safe."""
    self._writer.close()
    with open(self._tmp, 'rb') as f:
      os.fsync(f.fileno())
    self.state.save(self.state_path)
    os.replace(self._tmp, self.path)
    return self.state

  def abort(self) -> None:
    self._writer.close()  # the .tmp file stays; the next run deletes it


def _write_shards(output_dir: str, pending: Sequence[Tuple[shards.ShardPlan, str]],
                  root: Optional[str], classes: Tuple[str, ...],
                  options: worker.EncodeOptions, workers: int, progress: bool,
                  states: Dict[str, shards.ShardState]) -> None:
  """Writes the pending shards, adding their states to `states`."""
  if not pending:
    return
  fingerprints = {plan.name: (plan, fingerprint) for plan, fingerprint in pending}
  tasks = list(_chunk_tasks([plan for plan, _ in pending], root, classes, options))
  current, verifier = None, None
  bar = tqdm.tqdm(total=sum(len(plan.items) for plan, _ in pending), unit='img',
                  desc='converting', disable=not progress, smoothing=0.1)
  try:
    with bar, _ordered_map(worker.process_chunk, tasks, min(workers, len(tasks))) as results:
      for task, result in zip(tasks, results):  # imap keeps the order of the tasks
        if result.verbatim:
          verifier = verifier or verify.JpegVerifier()
          result = _without_undecodable(task, result, verifier)
        if current is None:
          current = _ShardFile(output_dir, *fingerprints[result.shard_name])
        current.add(result)
        bar.update(result.num_items)
        if current.remaining == 0:
          states[current.plan.name] = current.finish()
          current = None
  finally:
    if current is not None:
      current.abort()
    if verifier is not None:
      verifier.close()


def _without_undecodable(task: worker.ChunkTask, result: worker.ChunkResult,
                         verifier: verify.JpegVerifier) -> worker.ChunkResult:
  """`result`, or the chunk redone here without the files TensorFlow cannot decode.

  Redone so that the skipped files leave no trace in the chunk's sizes and pixel moments;
  it costs one chunk's work in this process per chunk with such a file.
  """
  failures = verifier.failures([data for _, data in result.verbatim])
  if not failures:
    return result
  rejected = {result.verbatim[i][0]: reason for i, reason in failures.items()}
  log.debug('%s: %d files decode in Pillow but not in TensorFlow; redoing their chunk',
            task.shard_name, len(rejected))
  return worker.process_chunk(dataclasses.replace(task, rejected=rejected))


def _chunk_tasks(plans: Iterable[shards.ShardPlan], root: Optional[str],
                 classes: Tuple[str, ...],
                 options: worker.EncodeOptions) -> Iterator[worker.ChunkTask]:
  for plan in plans:
    for start in range(0, len(plan.items), CHUNK_SIZE):
      yield worker.ChunkTask(plan.name, plan.items[start:start + CHUNK_SIZE], root, classes,
                             options, with_moments=plan.split == records.TRAIN)


@contextlib.contextmanager
def _ordered_map(func, tasks: Sequence, workers: int) -> Iterator[Iterator]:
  """`map(func, tasks)` in this process (workers=1) or in a pool of spawned processes."""
  if workers <= 1:
    yield map(func, tasks)
    return
  # spawn, not fork: forking a process that runs TensorFlow's threads can deadlock.
  with multiprocessing.get_context('spawn').Pool(workers, initializer=_ignore_sigint) as pool:
    yield pool.imap(func, tasks)


def _ignore_sigint() -> None:
  # Ctrl-C reaches the whole process group; the parent alone handles it (and stops the pool).
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _metadata(name: str, classes: Sequence[str], plans: Sequence[shards.ShardPlan],
              states: Mapping[str, shards.ShardState],
              source: str) -> Tuple[records.DatasetMetadata, Optional[np.ndarray]]:
  """dataset.json's contents and the mean image, from the states of all shards.

  The moments are merged in shard order; being exact integers, any order gives the same.
  """
  counts, num_shards, sizes = {}, {}, set()
  moments = stats.PixelMoments()
  for plan in plans:
    state = states[plan.name]
    counts[plan.split] = counts.get(plan.split, 0) + state.num_examples
    num_shards[plan.split] = plan.num_shards
    sizes |= state.sizes
    if plan.split == records.TRAIN and state.moments is not None:
      moments.merge(state.moments)
  image_size = next(iter(sizes)) if len(sizes) == 1 else None
  metadata = records.DatasetMetadata(
      name=name, classes=tuple(classes), counts=counts, num_shards=num_shards,
      image_size=image_size, color_stats=moments.color_stats(), source=source)
  return metadata, moments.mean_image() if image_size is not None else None


def _write_skipped(path: str, skipped: Sequence[Skipped]) -> None:
  lines = ['split\tfilename\treason\n']
  lines += [f'{split}\t{names.printable(filename)}\t{" ".join(reason.split())}\n'
            for split, filename, reason in skipped]
  records.write_atomically(path, lambda f: f.write(''.join(lines)))


def _log_summary(output_dir: str, metadata: records.DatasetMetadata,
                 skipped: Sequence[Skipped], num_converted: int, elapsed: float) -> None:
  counts = ', '.join(f'{split} {count}' for split, count in metadata.counts.items())
  log.info('%s: wrote %s examples of %d classes to %s', metadata.name, counts,
           metadata.num_classes, output_dir)
  if num_converted:
    log.info('converted %d images in %.1f s (%.0f images/s)', num_converted, elapsed,
             num_converted / max(elapsed, 1e-9))
  if skipped:
    log.warning('skipped %d unusable images (all are listed in %s):', len(skipped),
                os.path.join(output_dir, SKIPPED_FILE))
    for split, filename, reason in skipped[:_SUMMARY_LINES]:
      log.warning('  %s %s: %s', split, names.printable(filename), reason)
    if len(skipped) > _SUMMARY_LINES:
      log.warning('  ... and %d more', len(skipped) - _SUMMARY_LINES)


def _remove(path: str) -> None:
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)
