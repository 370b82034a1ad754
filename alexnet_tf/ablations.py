"""The paper's claims as ablations: each one removes or replaces one ingredient of a config.

`python -m alexnet_tf.train --dataset cifar10_paper --ablation no_lrn` trains the recipe without
LRN; `benchmarks/run_ablations.py` trains every row with the same budget and seeds and
writes the table. Each ablation is data: a name, the paper's claim it tests, and the change
to the config (a pure function of it, so it applies to the ImageNet net as well).
"""

import dataclasses
import math
from typing import Callable, NamedTuple

from alexnet_tf import config as cfg


class Ablation(NamedTuple):
  claim: str  # what the paper reports for this ingredient
  apply: Callable[[cfg.Config], cfg.Config]


def _model(config: cfg.Config, **changes) -> cfg.Config:
  return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))


def _conv_layers(config: cfg.Config, change) -> cfg.Config:
  return _model(config, conv_layers=tuple(change(i, layer)
                                          for i, layer in enumerate(config.model.conv_layers)))


def _no_lrn(config: cfg.Config) -> cfg.Config:
  return _conv_layers(config, lambda i, layer: dataclasses.replace(layer, lrn=False))


def _nonoverlapping_pool(config: cfg.Config) -> cfg.Config:
  # Paper 3.4 compares z = 3, s = 2 with z = s = 2, "which produces output of equivalent
  # dimensions" (with SAME pooling at 32x32 both halve the maps).
  return _model(config, pool_size=2, pool_stride=2)


def _one_tower(config: cfg.Config) -> cfg.Config:
  # Paper 3.2: the one-GPU net has half the kernels of each conv layer but the last, whose
  # width (and the fc layers after it) is kept so both nets have about the same parameters.
  model = config.model
  towers, last = model.num_towers, len(model.conv_layers) - 1
  layers = []
  for i, layer in enumerate(model.conv_layers):
    filters = layer.filters if i == last else layer.filters // towers
    stddev = layer.init_stddev
    if i > 0 and stddev is not None:
      # A scaled init (He) follows the fan-in, which changes where a layer read all towers.
      prev = model.conv_layers[i - 1]
      old_in = prev.filters if layer.reads == cfg.FULL else prev.filters // towers
      stddev *= math.sqrt(old_in / layers[-1].filters)
    layers.append(dataclasses.replace(layer, filters=filters, init_stddev=stddev))
  return _model(config, conv_layers=tuple(layers), num_towers=1,
                tower_devices=model.tower_devices[:1])


def _no_dropout(config: cfg.Config) -> cfg.Config:
  return _model(config, dropout_rate=0.0)


def _no_pca_lighting(config: cfg.Config) -> cfg.Config:
  return dataclasses.replace(config, data=dataclasses.replace(config.data, pca_lighting_std=0.0))


def _paper_init(config: cfg.Config) -> cfg.Config:
  # Every weight from N(0, 0.01) (paper 5), in place of the recipe's per-layer scaling.
  plain = _conv_layers(config, lambda i, layer: dataclasses.replace(layer, init_stddev=None))
  return _model(plain, weight_stddev=0.01, logits_init_stddev=None,
                dense_layers=tuple(dataclasses.replace(layer, init_stddev=None)
                                   for layer in plain.model.dense_layers))


ABLATIONS = {
    'no_lrn': Ablation('LRN lowers top-1 error by 1.4% (ImageNet), 2% (CIFAR-10, 4-layer net)',
                       _no_lrn),
    'nonoverlapping_pool': Ablation('overlapping 3x3/2 pooling lowers top-1 error by 0.4% '
                                    'against 2x2/2', _nonoverlapping_pool),
    'one_tower': Ablation('two towers lower top-1 error by 1.7% against one tower with half '
                          'the kernels', _one_tower),
    'no_dropout': Ablation('without dropout the net overfits substantially', _no_dropout),
    'no_pca_lighting': Ablation('PCA lighting lowers top-1 error by over 1%', _no_pca_lighting),
    'paper_init': Ablation("the paper's N(0, 0.01) init for every layer, against the recipe's",
                           _paper_init),
}


def apply(name: str, config: cfg.Config) -> cfg.Config:
  """`config` with ablation `name` applied; ValueError naming the choices if unknown."""
  try:
    return ABLATIONS[name].apply(config)
  except KeyError:
    raise ValueError(f'unknown ablation {name!r}; choose one of {sorted(ABLATIONS)}') from None
