"""Weights and layer activations of a trained model, from a run directory or a SavedModel.

The tools that draw the paper's figures (`tools/plot_kernels.py`, `tools/plot_retrieval.py`)
read through this module, so a run directory and an export of it give the same pictures:

- `open_trained(model_dir=...)` or `open_trained(saved_model=...)` finds the config, the class
  names, the training mean and the variables;
- `tower_kernels` reads one conv layer's kernels, one array per tower;
- `activations` runs the evaluation input (the centre crop, the model's training mean) through
  the net and returns one layer's outputs, by the layer names of `model.build_alexnet`;
- `nearest` finds nearest neighbours of activations (the paper's figure 4), `colourfulness`
  and `specialisation` score conv1's kernels and compare the towers (figure 3).
"""

import dataclasses
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from alexnet_tf import export, input_pipeline, lrn, precision, records, rundir
from alexnet_tf import estimator as estimator_lib
from alexnet_tf.config import Config
from alexnet_tf.model import build_alexnet

tf1 = tf.compat.v1

SCOPE = 'alexnet'  # build_alexnet's variable scope: variables and endpoints live under it


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model: where its variables are and what it needs to be fed."""
  config: Config
  classes: Tuple[str, ...]
  mean: Optional[np.ndarray]  # the training mean its inputs get subtracted
  checkpoint: str  # a checkpoint prefix (a SavedModel's is variables/variables)
  saved_model: Optional[str]  # the SavedModel directory, or None for a run's checkpoint


def open_trained(model_dir: Optional[str] = None, saved_model: Optional[str] = None,
                 checkpoint: str = 'best') -> Trained:
  """The model of a training run (`checkpoint`: 'best', 'latest' or a path) or of an export.

  Raises:
    FileNotFoundError: no run, checkpoint or export there.
  """
  if (model_dir is None) == (saved_model is None):
    raise ValueError('give exactly one of model_dir and saved_model')
  if saved_model is not None:
    config, classes = export.read_exported_config(saved_model)
    return Trained(config, classes, export.read_exported_mean(saved_model),
                   os.path.join(saved_model, 'variables', 'variables'), saved_model)
  run = rundir.load_run(model_dir)
  path = rundir.resolve_checkpoint(model_dir, checkpoint)
  return Trained(run.config, run.metadata.classes, rundir.training_mean(model_dir), path, None)


def tower_kernels(trained: Trained, layer: str = 'conv1') -> List[np.ndarray]:
  """One [k, k, in, filters / towers] kernel array per tower of conv layer `layer`.

  Raises:
    ValueError: the model has no conv layer of that name.
  """
  names = [spec.name for spec in trained.config.model.conv_layers]
  if layer not in names:
    raise ValueError(f'{_where(trained)} has no conv layer {layer!r}; its conv layers are '
                     f'{", ".join(names)}')
  reader = tf.train.load_checkpoint(trained.checkpoint)
  return [reader.get_tensor(f'{SCOPE}/tower{t}/{layer}/weights')
          for t in range(trained.config.model.num_towers)]


class Activations(NamedTuple):
  values: np.ndarray  # [examples, ...] the layer's outputs
  labels: np.ndarray  # [examples] int
  images: np.ndarray  # [examples, S, S, 3] uint8: the crops the net saw, for display


def activations(trained: Trained, data_dir: str, split: str, layer: str,
                limit: Optional[int] = None, batch_size: int = 250,
                progress: bool = False) -> Activations:
  """Layer `layer`'s outputs for the first `limit` examples (all by default) of `split`.

  Raises:
    ValueError: the net has no layer of that name (the message lists the ones it has).
  """
  source = input_pipeline.open_dataset(data_dir, trained.config.data, mean=trained.mean)
  count = source.metadata.counts[split] if limit is None else min(
      limit, source.metadata.counts[split])
  dataset = input_pipeline.make_dataset(source, split, trained.config.data, batch_size,
                                        training=False).take(-(-count // batch_size))
  graph = tf.Graph()
  session = tf1.Session(graph=graph)
  with graph.as_default():
    if trained.saved_model:
      images, output = _load_saved_model(session, trained, layer)
    else:
      images, output = _build_from_checkpoint(trained, source.metadata, layer)
      tf1.train.Saver(tf1.global_variables()).restore(session, trained.checkpoint)
  values, labels, crops = [], [], []
  batches = dataset
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    batches = tqdm(dataset, total=-(-count // batch_size), desc=f'{split} {layer}', unit='batch')
  try:  # not `with session`: that makes its graph the default, and eager iteration fails
    for features, label in batches:
      floats = features['image'].numpy()
      values.append(session.run(output, {images: floats}))
      labels.append(label.numpy())
      crops.append(_displayable(floats, trained.mean))
  finally:
    session.close()
  return Activations(np.concatenate(values)[:count], np.concatenate(labels)[:count],
                     np.concatenate(crops)[:count])


def _build_from_checkpoint(trained: Trained, metadata: records.DatasetMetadata, layer: str):
  # The portable LRN: reading activations needs no kernel build, and matches the trained op.
  model_config = estimator_lib.model_config_for(precision.evaluable_here(trained.config),
                                                metadata, lrn.EXPORT)
  size = model_config.image_size
  images = tf1.placeholder(tf.float32, [None, size, size, 3], name='images')
  _, endpoints = build_alexnet(images, model_config, training=False, scope=SCOPE)
  if layer not in endpoints:
    raise ValueError(f'{_where(trained)} has no layer {layer!r}; its layers are '
                     f'{", ".join(endpoints)}')
  return images, endpoints[layer]


def _load_saved_model(session: tf1.Session, trained: Trained, layer: str):
  meta = tf1.saved_model.loader.load(session, ['serve'], trained.saved_model)
  signature = meta.signature_def[export.FLOAT_SERVING_SIGNATURE]
  graph = tf1.get_default_graph()
  images = graph.get_tensor_by_name(signature.inputs[export.FLOAT_IMAGES].name)
  try:
    return images, graph.get_tensor_by_name(f'{SCOPE}/{layer}:0')
  except KeyError:
    raise ValueError(f'{_where(trained)} has no layer {layer!r}') from None


def _displayable(floats: np.ndarray, mean: Optional[np.ndarray]) -> np.ndarray:
  """The centre crops as uint8 again: the evaluation crop is the centre of the stored image, so
  adding the centre of the training mean back undoes the subtraction exactly."""
  if mean is not None:
    size = floats.shape[1]
    if mean.ndim == 3:
      top = (mean.shape[0] - size) // 2
      mean = mean[top:top + size, top:top + size]
    floats = floats + mean
  return np.clip(np.rint(floats), 0, 255).astype(np.uint8)


def _where(trained: Trained) -> str:
  return trained.saved_model or trained.checkpoint


def nearest(queries: np.ndarray, pool: np.ndarray, k: int,
            chunk: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
  """The `k` rows of `pool` [N, D] nearest to each of `queries` [Q, D] in Euclidean distance:
  (indices [Q, k], distances [Q, k]), nearest first. Chunked, so memory is O(Q * chunk)."""
  queries = np.asarray(queries, np.float64).reshape(len(queries), -1)
  pool = np.asarray(pool).reshape(len(pool), -1)  # converted a chunk at a time
  k = min(k, len(pool))
  best_d = np.full((len(queries), 0), np.inf)
  best_i = np.zeros((len(queries), 0), np.int64)
  q2 = np.sum(queries ** 2, axis=1, keepdims=True)
  for start in range(0, len(pool), chunk):
    block = pool[start:start + chunk].astype(np.float64)
    d2 = np.maximum(q2 - 2 * queries @ block.T + np.sum(block ** 2, axis=1), 0)
    d = np.concatenate([best_d, d2], axis=1)
    i = np.concatenate([best_i, np.arange(start, start + len(block))[None].repeat(
        len(queries), 0)], axis=1)
    order = np.argsort(d, axis=1, kind='stable')[:, :k]
    best_d, best_i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
  return best_i, np.sqrt(best_d)


def colourfulness(kernels: np.ndarray) -> np.ndarray:
  """Per kernel of [k, k, 3, filters]: the share of its energy off the grey axis, in [0, 1].

  Each kernel pixel's RGB weights split into their grey part (the channel mean, repeated) and
  the rest, the chroma; the score is |chroma|^2 / |w|^2 over the kernel. A colour-agnostic
  kernel (equal weights on R, G and B) scores 0, an opponent one (R - G) 1, one reading a
  single channel 2/3, and random Gaussian weights 2/3 on average (the chroma plane holds two
  of the three colour dimensions).
  """
  w = np.asarray(kernels, np.float64)
  chroma = w - w.mean(axis=2, keepdims=True)
  energy = np.maximum(np.sum(w ** 2, axis=(0, 1, 2)), 1e-30)
  return np.sum(chroma ** 2, axis=(0, 1, 2)) / energy


def specialisation(scores: Sequence[np.ndarray], permutations: int = 10000,
                   seed: int = 0) -> dict:
  """How far two towers' colourfulness differs, against random splits of the same kernels.

  `scores`: the per-kernel scores of tower 0 and tower 1. Returns the towers' means, the gap
  |mean0 - mean1| and the share of random equal-size splits with a gap at least as large
  (a permutation test's p-value: small means the towers differ beyond chance).
  """
  if len(scores) != 2:
    raise ValueError(f'tower specialisation needs two towers, got {len(scores)}')
  a, b = (np.asarray(s, np.float64) for s in scores)
  gap = abs(a.mean() - b.mean())
  pooled = np.concatenate([a, b])
  rng = np.random.default_rng(seed)
  shuffled = rng.permuted(np.broadcast_to(pooled, (permutations, len(pooled))), axis=1)
  random_gaps = np.abs(shuffled[:, :len(a)].mean(1) - shuffled[:, len(a):].mean(1))
  return {'tower_means': [float(a.mean()), float(b.mean())],
          'tower_stds': [float(a.std()), float(b.std())], 'gap': float(gap),
          'p_value': float((np.sum(random_gaps >= gap) + 1) / (permutations + 1))}
