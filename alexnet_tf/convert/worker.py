"""The work done in the worker processes: a chunk of images in, serialized Examples out.

This module (and everything it imports) must stay free of TensorFlow: the workers are
spawned fresh and importing TensorFlow would cost each of them seconds. The parent process
writes the returned records into TFRecord files.
"""

import dataclasses
import os
from typing import List, Mapping, NamedTuple, Optional, Set, Tuple

import numpy as np

from alexnet_tf.convert import example
from alexnet_tf.convert import images
from alexnet_tf.convert import stats
from alexnet_tf.convert.errors import ConversionError


class Item(NamedTuple):
  """One source image: a file below the source root, or a pixel array.

  A named tuple because ImageNet has 1.3 million of them.

  Attributes:
    filename: the file's path relative to the source root ('/'-separated); stored as
      image/filename.
    label: 0-based class index.
    pixels: uint8 [height, width, 3] RGB when the image is not a file, else None.
  """
  filename: str
  label: int
  pixels: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
  """How images are stored (see `images`)."""
  resize: int = 0  # 0 keeps the size; N: shorter side N, central N x N crop
  jpeg_quality: int = images.DEFAULT_JPEG_QUALITY  # of re-encoded images
  pixels_format: str = images.PNG  # how pixel arrays (CIFAR-10 pickles) are encoded
  max_pixels: int = images.DEFAULT_MAX_PIXELS  # larger images are skipped, never decoded

  def __post_init__(self):
    if not 1 <= self.max_pixels <= images.MAX_PIXELS:
      raise ConversionError(f'the pixel limit must be in 1..{images.MAX_PIXELS} (what '
                            f'training decodes), got {self.max_pixels}')
    if self.resize < 0:
      raise ConversionError(f'resize must be >= 0 (0 keeps the size), got {self.resize}')
    if not 1 <= self.jpeg_quality <= 100:
      raise ConversionError(f'the JPEG quality must be in 1..100, got {self.jpeg_quality}')
    if self.pixels_format not in (images.JPEG, images.PNG):
      raise ConversionError(f'pixels_format must be {images.JPEG!r} or {images.PNG!r}, '
                            f'got {self.pixels_format!r}')


@dataclasses.dataclass(frozen=True, eq=False)
class ChunkTask:
  """Consecutive images of one shard, processed by one call of `process_chunk`."""
  shard_name: str
  items: Tuple[Item, ...]
  root: Optional[str]  # the directory the items' filenames are relative to
  classes: Tuple[str, ...]  # label i's text is classes[i]
  options: EncodeOptions
  with_moments: bool  # accumulate pixel moments (the training split only)
  # {index in items: reason} of images to skip unread: those whose verbatim bytes failed
  # the parent's check (`verify`), when it redoes the chunk without them.
  rejected: Mapping[int, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class ChunkResult:
  """What came out of a ChunkTask, in the order of its items.

  Attributes:
    shard_name: the shard the records belong to.
    num_items: images in the task, written or skipped.
    records: serialized tf.train.Examples.
    skipped: (filename, reason) of each image that could not be used.
    sizes: the (height, width) of the stored images.
    moments: pixel sums of the stored images if the task asked for them.
    verbatim: (index in the task's items, bytes) of the records that store the source file
      as it is: only Pillow has decoded those, and the parent checks them (`verify`).
  """
  shard_name: str
  num_items: int
  records: List[bytes] = dataclasses.field(default_factory=list)
  skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  sizes: Set[Tuple[int, int]] = dataclasses.field(default_factory=set)
  moments: Optional[stats.PixelMoments] = None
  verbatim: List[Tuple[int, bytes]] = dataclasses.field(default_factory=list)


def encode_item(item: Item, root: Optional[str],
                options: EncodeOptions) -> images.EncodedImage:
  """Reads, validates and encodes one image; raises images.BadImageError if it is unusable."""
  if item.pixels is not None:
    return images.encode_pixels(item.pixels, options.resize, options.pixels_format,
                                options.jpeg_quality)
  data = images.read_file(os.path.join(root, item.filename),
                          images.max_file_bytes(options.max_pixels))
  return images.encode_file(data, options.resize, options.jpeg_quality, options.max_pixels)


def process_chunk(task: ChunkTask) -> ChunkResult:
  """Encodes every image of the task; unusable ones are listed, never fatal."""
  result = ChunkResult(task.shard_name, len(task.items),
                       moments=stats.PixelMoments() if task.with_moments else None)
  pending, pending_pixels = [], 0  # images whose moments are summed in one batch
  for index, item in enumerate(task.items):
    if index in task.rejected:
      result.skipped.append((item.filename, task.rejected[index]))
      continue
    try:
      encoded = encode_item(item, task.root, task.options)
    except images.BadImageError as error:
      result.skipped.append((item.filename, str(error)))
      continue
    if encoded.verbatim:
      result.verbatim.append((index, encoded.data))
    result.records.append(example.image_example(
        encoded.data, encoded.format, encoded.height, encoded.width, item.label,
        task.classes[item.label], item.filename))
    result.sizes.add((encoded.height, encoded.width))
    if result.moments is not None:
      pending.append(encoded.pixels)
      pending_pixels += encoded.height * encoded.width
      if pending_pixels >= stats.BATCH_PIXELS:
        result.moments.add_images(pending)
        pending, pending_pixels = [], 0
  if result.moments is not None:
    result.moments.add_images(pending)
  return result
