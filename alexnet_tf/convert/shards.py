"""Which images go into which shard, and the saved state that lets a conversion resume.

A split's images are shuffled with a seeded RNG and cut into contiguous shards, so every
shard mixes the classes. A finished shard leaves a state file (its example count, skipped
images, image sizes and pixel moments) that is written *before* the shard's atomic rename;
a re-run skips shards whose file and state exist and whose fingerprint (the images, labels,
source root, classes and encoding options) still matches.
"""

import dataclasses
import hashlib
import json
import os
import random
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from alexnet_tf import records
from alexnet_tf.convert import stats
from alexnet_tf.convert import worker
from alexnet_tf.convert.errors import ConversionError

# Bumped when the same inputs would produce different shards, so old state is not trusted.
_STATE_VERSION = 1
STATE_DIR = '.convert_state'  # inside the output directory
TMP_SUFFIX = '.tmp'  # shards are written as <shard>.tmp, which records.shard_files ignores


@dataclasses.dataclass(frozen=True, eq=False)
class ShardPlan:
  """The images of one shard, in the order they are written."""
  split: str
  index: int
  num_shards: int
  items: Tuple[worker.Item, ...]

  @property
  def name(self) -> str:
    return records.shard_name(self.split, self.index, self.num_shards)

  def fingerprint(self, root: Optional[str], classes: Sequence[str],
                  options: worker.EncodeOptions) -> str:
    """A digest of everything that determines the shard's contents."""
    content = json.dumps({
        'version': _STATE_VERSION, 'name': self.name, 'root': root, 'classes': list(classes),
        'options': dataclasses.asdict(options),
        'items': [[item.filename, item.label] for item in self.items],
    }, sort_keys=True)
    return hashlib.sha256(content.encode('utf-8')).hexdigest()


def plan_split(split: str, items: Sequence[worker.Item], num_shards: int,
               seed: int) -> List[ShardPlan]:
  """Shuffles `items` (seeded by `seed` and the split's name) and cuts them into shards.

  There are never more shards than items, so no shard is planned empty. No items, no shards.
  """
  if not items:
    return []
  if num_shards < 1:
    raise ConversionError(f'{split}: the number of shards must be >= 1, got {num_shards}')
  order = list(range(len(items)))
  random.Random(f'{seed}/{split}').shuffle(order)
  num_shards = min(num_shards, len(items))
  bounds = [len(items) * i // num_shards for i in range(num_shards + 1)]
  return [ShardPlan(split, i, num_shards, tuple(items[j] for j in order[lo:hi]))
          for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]


@dataclasses.dataclass(eq=False)
class ShardState:
  """What a finished shard holds, saved next to it so a resumed run need not re-read it.

  Attributes:
    fingerprint: `ShardPlan.fingerprint` of the plan the shard was written from.
    num_examples: records in the shard.
    skipped: (filename, reason) of the shard's unusable images.
    sizes: (height, width) of the stored images.
    moments: pixel sums, for shards of the training split.
  """
  fingerprint: str
  num_examples: int = 0
  skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  sizes: Set[Tuple[int, int]] = dataclasses.field(default_factory=set)
  moments: Optional[stats.PixelMoments] = None

  def add(self, result: worker.ChunkResult) -> None:
    self.num_examples += len(result.records)
    self.skipped.extend(result.skipped)
    self.sizes.update(result.sizes)
    if result.moments is not None:
      if self.moments is None:
        self.moments = stats.PixelMoments()
      self.moments.merge(result.moments)

  def save(self, path: str) -> None:
    """Writes the state atomically (a temporary file, then a rename)."""
    arrays = {
        'fingerprint': np.array(self.fingerprint),
        'num_examples': np.array(self.num_examples, np.int64),
        'skipped': np.array(json.dumps(self.skipped)),
        'sizes': np.array(sorted(self.sizes), np.int64).reshape(-1, 2),
    }
    if self.moments is not None:
      arrays.update(self.moments.to_arrays('moments/'))
    tmp = path + TMP_SUFFIX
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> Optional['ShardState']:
    """The saved state, or None if it is missing or unreadable (the shard is then redone)."""
    try:
      with np.load(path, allow_pickle=False) as arrays:
        arrays = dict(arrays)
    except (OSError, ValueError):
      return None
    moments = (stats.PixelMoments.from_arrays(arrays, 'moments/')
               if 'moments/counts' in arrays else None)
    return cls(fingerprint=str(arrays['fingerprint']),
               num_examples=int(arrays['num_examples']),
               skipped=[tuple(entry) for entry in json.loads(str(arrays['skipped']))],
               sizes={(int(h), int(w)) for h, w in arrays['sizes']},
               moments=moments)


def state_path(output_dir: str, shard: str) -> str:
  return os.path.join(output_dir, STATE_DIR, shard + '.npz')


def load_finished(output_dir: str, plan: ShardPlan, fingerprint: str) -> Optional[ShardState]:
  """The state of `plan`'s shard if it was finished from the same plan, else None."""
  if not os.path.isfile(os.path.join(output_dir, plan.name)):
    return None
  state = ShardState.load(state_path(output_dir, plan.name))
  if state is None or state.fingerprint != fingerprint:
    return None
  return state
