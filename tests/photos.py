"""Real photographs for tests, without downloads or the shared data directory.

scikit-image's sample photographs that ship inside its wheel (no pooch download) are cut into
32x32 patches and written as a CIFAR-10-shaped JPEG tree: the stand-in for the real CIFAR-10
JPEGs on a machine without ../shared/data.
"""

import pathlib
from typing import List, Sequence

import numpy as np
from PIL import Image

# One photo per class, so that the classes differ in content and colour and a net can learn
# them. The class names are CIFAR-10's, so consumers of the real tree work unchanged; they are
# labels only (a couple fit: the rocket flies, the cat is a cat). The last two are grey.
CLASS_PHOTOS = {
    'airplane': 'rocket', 'automobile': 'motorcycle', 'bird': 'astronaut', 'cat': 'chelsea',
    'deer': 'coffee', 'dog': 'immunohistochemistry', 'frog': 'retina',
    'horse': 'hubble_deep_field', 'ship': 'camera', 'truck': 'coins',
}
PATCH_SIZE = 32
# A window a third of the photo's shorter side, 3-15x downscaled: an object-sized view, as in
# CIFAR-10, rather than a 32-pixel speck of texture.
WINDOW_FRACTION = 3
# Flat windows (sky, the black of the deep field) are left out: every patch has some content.
MIN_PATCH_STD = 20.0


def sample_photo(name: str) -> np.ndarray:
  """The bundled scikit-image sample photo `name` as uint8 [h, w, 3] (grey ones repeated)."""
  import skimage.data  # pylint: disable=import-outside-toplevel  (slow; only when needed)
  if name == 'motorcycle':
    pixels = skimage.data.stereo_motorcycle()[0]  # the left view; the right is the same scene
  else:
    pixels = getattr(skimage.data, name)()
  if pixels.ndim == 2:
    pixels = np.stack([pixels] * 3, axis=-1)
  return np.ascontiguousarray(pixels)


def photo_patches(photo: np.ndarray, count: int, size: int = PATCH_SIZE) -> List[np.ndarray]:
  """`count` distinct size x size patches of `photo`, spread over it, none of them flat.

  Windows of a third of the shorter side on a quarter-window grid, each shrunk with Pillow's
  antialiasing filter; `count` of those with content are taken at even spacing in grid order.
  """
  height, width = photo.shape[:2]
  window = min(height, width) // WINDOW_FRACTION
  stride = max(1, window // 4)
  candidates = []
  for top in range(0, height - window + 1, stride):
    for left in range(0, width - window + 1, stride):
      crop = Image.fromarray(photo[top:top + window, left:left + window])
      patch = np.asarray(crop.resize((size, size), Image.LANCZOS))
      if patch.std() >= MIN_PATCH_STD:
        candidates.append(patch)
  if len(candidates) < count:
    raise ValueError(f'a {width}x{height} photo has {len(candidates)} patches with content, '
                     f'not {count}')
  return [candidates[i] for i in np.linspace(0, len(candidates) - 1, count).astype(int)]


def write_photo_tree(dest: pathlib.Path, classes: Sequence[str], per_class: int) -> pathlib.Path:
  """Writes dest/cifar10-jpeg/train/<class>/<nnnn>.jpg: `per_class` patches of the photo of
  each of `classes` (keys of CLASS_PHOTOS), encoded as the real tarball's files are.

  Returns:
    The root dest/cifar10-jpeg, laid out as the real CIFAR-10 JPEG tarball.
  """
  root = dest / 'cifar10-jpeg'
  for class_name in classes:
    folder = root / 'train' / class_name
    folder.mkdir(parents=True)
    patches = photo_patches(sample_photo(CLASS_PHOTOS[class_name]), per_class)
    for index, patch in enumerate(patches):
      # The tarball's encoding (Pillow's defaults, spelled out): quality 75, 4:2:0 chroma.
      Image.fromarray(patch).save(folder / f'{index:04d}.jpg', format='JPEG', quality=75,
                                  subsampling='4:2:0')
  return root
