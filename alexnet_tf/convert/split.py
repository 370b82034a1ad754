"""A deterministic stratified hold-out split (validation from training data)."""

import collections
import math
import random
from typing import List, Sequence, Tuple

from alexnet_tf.convert.errors import ConversionError


def check_fraction(fraction: float) -> None:
  if not 0.0 <= fraction < 1.0:
    raise ConversionError(f'the validation fraction must be in [0, 1), got {fraction}')


def stratified_split(labels: Sequence[int], fraction: float,
                     seed: int) -> Tuple[List[int], List[int]]:
  """Holds out `fraction` of every class, chosen by a seeded shuffle.

  Each class c with n_c examples gives floor(n_c * fraction + 0.5) of them to the held-out
  part, but always keeps one for training. Each class has its own RNG (seeded by `seed` and
  the label), so the choice within a class does not depend on the other classes.

  Args:
    labels: label of every example.
    fraction: in [0, 1).
    seed: the same seed and labels always give the same split.

  Returns:
    (kept, held_out): sorted indices into `labels`.
  """
  check_fraction(fraction)
  by_class = collections.defaultdict(list)
  for index, label in enumerate(labels):
    by_class[label].append(index)
  held_out = []
  for label in sorted(by_class):
    indices = by_class[label]
    count = min(math.floor(len(indices) * fraction + 0.5), len(indices) - 1)
    held_out.extend(random.Random(f'{seed}/{label}').sample(indices, count))
  held = set(held_out)
  return [i for i in range(len(labels)) if i not in held], sorted(held)
