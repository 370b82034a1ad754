"""The paper's image preprocessing (sections 2 and 4.1) as pure TensorFlow ops.

Everything here works in graph mode (`tf.compat.v1`, inside `tf.data` functions) and eagerly,
reads no files and keeps no state: random choices come from stateless ops driven by an
explicit `seed` (int32/int64 [2]), so the same seed gives the same augmentation anywhere.

Pixel scale: images are uint8 RGB when decoded and float32 on 0-255 with the mean subtracted
afterwards (the paper trained on raw values minus the mean image). `mean` arguments are
  - None: no mean subtraction (`DataConfig.subtract_mean == 'none'`),
  - [3]: one mean per channel (`'rgb'`, `ColorStats.mean_rgb`),
  - [height, width, 3]: the per-pixel training mean of the stored images (`'pixel'`), which
    is cropped with the same window as the image;
as NumPy arrays (folded into the graph as constants) or float32 tensors.

Training, pad == 0 (ImageNet), in two stages:
  - per image, integers only: the window, mirror and lighting alphas (TrainParams), then
    decode only the crop_size window of the stored JPEG (fused decode_and_crop_jpeg) and
    mirror the uint8 crop. With the stored size known (converter output), the choices of a
    block of images are drawn at once (`plan_train_crops`, with the JPEG decode windows) and
    each image only decodes its planned window (`decode_planned_crop`; `train_crop_with` for
    a decoded image); otherwise each image draws its own from its seed and its size
    (`decode_train_crop`; `train_crop` for a decoded image). Either way: the uint8 crop and
    its TrainParams (window corner, flip, alphas);
  - per batch, float (`finish_train_batch`): float32, minus the mean cut at each image's
    window (mirrored alike), plus each image's PCA lighting shift. It belongs where the net
    runs (on a GPU; inside the training step on a CPU): the float32 crops have 4x the bytes
    of the uint8 ones, and tf.data threads would spend most of their time on them.
  `preprocess_encoded_for_train` / `preprocess_for_train` are both stages for one image.
Training, pad > 0 (CIFAR-10), `augment_batch`: subtract the mean from the whole stored image,
zero-pad by `pad` (zero is the mean after the subtraction), random crop, mirror, lighting, on
whole batches because the images are tiny.
Evaluation, `preprocess_for_eval`: subtract the mean, pad, then the centre crop or the ten
crops of the paper's test procedure (section 4.1).

Speed notes (the training input runs the integer stage per image, on the CPU):
  - Channel constants are added with `add_per_channel`, not `x + values`: TF broadcasts a [3]
    vector over [H, W, 3] element by element, ~10x slower than an add of equal shapes, while
    a tiled [W * 3] row broadcast over [H, W * 3] is vectorised.
  - The mirror is applied to the uint8 crop and the mean window is cut from a mirrored copy
    of the mean image; that is bit for bit the same as cropping both identically,
    subtracting and then mirroring the difference.
  - The mean windows of a batch are one slice per image of [mean, mirrored mean]: a slice
    copies whole rows, while a batched gather over columns copies 3 floats per index (the
    whole float stage of 128 227x227 crops ran 2.3x slower with gathers).
  - Every op in a tf.data function costs microseconds of overhead: drawing an image's
    choices per image (uniform, fold_in, normal, the JPEG header's size, the offset and
    window arithmetic) cost ~100 us of CPU per 227x227 crop, a sixth of the decode, where
    `plan_train_crops` draws a block of 256 images in a few ops. The mirror stays per image
    (a cond and a reverse of the uint8 crop, not measurable there): mirroring the batch in
    the float stage instead measured ~150 us per image.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import records

ArrayLike = Union[np.ndarray, tf.Tensor, Sequence[float]]

# Ten-crop order (the paper's test procedure): the centre, the four corners, then the same
# five windows of the mirrored image; `ten_crops` returns the crops in this order.
TEN_CROP_NAMES = ('centre', 'top_left', 'top_right', 'bottom_left', 'bottom_right',
                  'centre_flipped', 'top_left_flipped', 'top_right_flipped',
                  'bottom_left_flipped', 'bottom_right_flipped')

SUBTRACT_MEAN_MODES = ('pixel', 'rgb', 'none')


def check_data_config(data_config: config_lib.DataConfig) -> None:
  """ValueError for settings no pipeline can run with."""
  if data_config.subtract_mean not in SUBTRACT_MEAN_MODES:
    raise ValueError(f'DataConfig.subtract_mean must be one of {SUBTRACT_MEAN_MODES}, got '
                     f'{data_config.subtract_mean!r}')
  if data_config.crop_size <= 0 or data_config.pad < 0:
    raise ValueError(f'DataConfig needs crop_size > 0 and pad >= 0, got crop_size='
                     f'{data_config.crop_size}, pad={data_config.pad}')
  if data_config.pca_lighting_std < 0:
    raise ValueError(f'DataConfig.pca_lighting_std must be >= 0, got '
                     f'{data_config.pca_lighting_std}')


# ----------------------------------------------------------------------------------------
# Random parameters of the training augmentation


class TrainParams(NamedTuple):
  """The random choices of one image (or, with batch dimensions, of a batch)."""
  offset: tf.Tensor  # int32 [..., 2]: (y, x) corner of the crop window
  flip: Optional[tf.Tensor]  # bool [...]: mirror the crop; None: random_flip is off
  alpha: Optional[tf.Tensor]  # float32 [..., 3]: PCA lighting alphas; None: lighting off


def crop_offset(uniform, height, width, crop_size: int) -> tf.Tensor:
  """Uniform [..., 2] on [0, 1) -> int32 [..., 2] window corners (y, x).

  Each of the size - crop_size + 1 positions along an axis is equally likely, including the
  last one. `height` and `width` may be tensors (the shape of a decoded image).
  """
  positions = tf.stack([height, width]) - crop_size + 1
  positions = tf.cast(positions, tf.int32)
  offset = tf.cast(uniform * tf.cast(positions, tf.float32), tf.int32)  # floor: uniform >= 0
  # float rounding could reach `positions` itself for uniform just below 1.
  return tf.minimum(offset, positions - 1)


def _draws(seed, batch_shape) -> Tuple[tf.Tensor, tf.Tensor]:
  """The two random tensors behind TrainParams: uniform [..., 3], and the normal's seed."""
  uniform = tf.random.stateless_uniform(list(batch_shape) + [3], seed=seed)
  return uniform, tf.random.experimental.stateless_fold_in(seed, 1)


def _flip_and_alpha(uniform, normal_seed, data_config, batch_shape):
  flip = uniform[..., 2] < 0.5 if data_config.random_flip else None
  alpha = None
  if data_config.pca_lighting_std > 0:
    alpha = tf.random.stateless_normal(list(batch_shape) + [3], seed=normal_seed,
                                       stddev=data_config.pca_lighting_std)
  return flip, alpha


def sample_train_params(seed, height, width, data_config: config_lib.DataConfig,
                        batch_shape=()) -> TrainParams:
  """The crop window, mirror and lighting alphas of one image (or a batch) from one seed.

  Args:
    seed: int32/int64 [2].
    height, width: the size of the image the window is cut from (including the padding).
    data_config: crop_size, random_flip (p = 1/2), pca_lighting_std (alpha ~ N(0, std)).
    batch_shape: leading dimensions: one set of choices per image.
  """
  uniform, normal_seed = _draws(seed, batch_shape)
  flip, alpha = _flip_and_alpha(uniform, normal_seed, data_config, batch_shape)
  return TrainParams(crop_offset(uniform[..., :2], height, width, data_config.crop_size),
                     flip, alpha)


# ----------------------------------------------------------------------------------------
# Geometry


def crop(image: tf.Tensor, offset, crop_size: int) -> tf.Tensor:
  """The window [y : y + crop_size, x : x + crop_size] of image [H, W, C] -> [crop, crop, C]."""
  offset = tf.cast(offset, tf.int32)
  window = tf.slice(image, tf.stack([offset[0], offset[1], 0]), [crop_size, crop_size, -1])
  window.set_shape([crop_size, crop_size, image.shape[-1]])
  return window


def flip_left_right(image: tf.Tensor) -> tf.Tensor:
  """Horizontal mirror, `x[..., :, ::-1, :]`, of [H, W, C] or [batch, H, W, C]."""
  return tf.reverse(image, axis=[-2])


def pad_image(image: tf.Tensor, pad: int) -> tf.Tensor:
  """Zero padding of `pad` pixels on each side of the two spatial axes of [..., H, W, C]."""
  if pad == 0:
    return image
  paddings = [[0, 0]] * (image.shape.rank - 3) + [[pad, pad], [pad, pad], [0, 0]]
  return tf.pad(image, paddings)


def central_crop_offset(height, width, crop_size: int):
  """((H - crop) // 2, (W - crop) // 2): the centre window's corner (rounded up and left)."""
  return (height - crop_size) // 2, (width - crop_size) // 2


def ten_crop_offsets(height, width, crop_size: int) -> List[Tuple[int, int]]:
  """The five (offset_y, offset_x) of `ten_crops`: centre, top-left, top-right, bottom-left,
  bottom-right. The flipped five use the same windows of the mirrored image.

  `height` and `width` may be ints (then the offsets are ints) or scalar tensors.
  """
  if isinstance(height, int) and isinstance(width, int) and min(height, width) < crop_size:
    raise ValueError(f'a {height}x{width} image has no {crop_size}x{crop_size} crops')
  bottom, right = height - crop_size, width - crop_size
  return [central_crop_offset(height, width, crop_size), (0, 0), (0, right), (bottom, 0),
          (bottom, right)]


def _spatial_size(image: tf.Tensor):
  """(height, width) of [H, W, C]: Python ints when static, else scalar tensors."""
  height, width = image.shape[0], image.shape[1]
  if height is None or width is None:
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
  return height, width


def ten_crops(image: tf.Tensor, crop_size: int) -> tf.Tensor:
  """The ten test patches of paper 4.1 from image [H, W, C] -> [10, crop, crop, C].

  Order: [centre, top-left, top-right, bottom-left, bottom-right], then those five windows
  horizontally mirrored (`TEN_CROP_NAMES`).
  """
  height, width = _spatial_size(image)
  five = tf.stack([crop(image, tf.stack([y, x]), crop_size)
                   for y, x in ten_crop_offsets(height, width, crop_size)])
  return tf.concat([five, flip_left_right(five)], axis=0)


def crop_flip_batch(images: tf.Tensor, offsets, flips, crop_size: int) -> tf.Tensor:
  """Per-example windows and mirrors of a batch in two gathers.

  Equal to stacking `crop(images[i], offsets[i])`, mirrored where flips[i].

  Args:
    images: [batch, H, W, C] of any dtype.
    offsets: int32 [batch, 2] (y, x) corners.
    flips: bool [batch], or None for no mirroring.

  Returns:
    [batch, crop, crop, C].
  """
  offsets = tf.cast(offsets, tf.int32)
  steps = tf.range(crop_size, dtype=tf.int32)[tf.newaxis]
  rows = offsets[:, 0:1] + steps
  if flips is not None:
    steps = tf.where(tf.reshape(flips, [-1, 1]), crop_size - 1 - steps, steps)
  columns = offsets[:, 1:2] + steps
  x = tf.gather(images, rows, axis=1, batch_dims=1)
  return tf.gather(x, columns, axis=2, batch_dims=1)


# ----------------------------------------------------------------------------------------
# Colour


def add_per_channel(image: tf.Tensor, values) -> tf.Tensor:
  """image + values broadcast over the pixels.

  Args:
    image: [..., H, W, C].
    values: [C] for every image, or [batch, C] for image [batch, H, W, C].

  Implemented as the add of a tiled [W * C] row to [..., H, W * C], which TF vectorises
  (see the module docstring).
  """
  values = tf.convert_to_tensor(values, dtype=image.dtype)
  shape = image.shape
  if shape[-3:].is_fully_defined():
    height, width, channels = shape[-3:]
    out_shape = [-1 if d is None else d for d in shape.as_list()]
  else:
    dynamic = tf.shape(image)
    height, width, channels = dynamic[-3], dynamic[-2], dynamic[-1]
    out_shape = dynamic
  rows = tf.reshape(image, [-1, height, width * channels])
  if values.shape.rank == 1:
    row = tf.tile(values, [width])  # [W * C], broadcast over the leading dimensions
  elif values.shape.rank == 2 and shape.rank == 4:
    row = tf.reshape(tf.tile(values, [1, width]), [-1, 1, width * channels])
  else:
    raise ValueError(f'values must be [C] or, for image [batch, H, W, C], [batch, C]; got '
                     f'values {values.shape} for image {shape}')
  return tf.reshape(rows + row, out_shape)


def lighting_matrix(eigenvalues: ArrayLike, eigenvectors: ArrayLike) -> np.ndarray:
  """float32 [3, 3]: the eigenvectors (columns) scaled by the standard deviations sqrt(l_i)."""
  values = np.maximum(np.asarray(eigenvalues, np.float64), 0.0)
  return (np.asarray(eigenvectors, np.float64) * np.sqrt(values)[np.newaxis]).astype(np.float32)


def lighting_offset(alpha, eigenvalues: ArrayLike, eigenvectors: ArrayLike) -> tf.Tensor:
  """The PCA colour shift of paper 4.1 for given alphas: float32 [..., 3].

  offset = eigenvectors @ (alpha * sqrt(eigenvalues)) = sum_i p_i * alpha_i * sqrt(l_i),
  added to every RGB pixel of the image.

  The paper writes alpha_i * lambda_i, but `ColorStats.eigenvalues` are variances on the
  0-255 scale (for ImageNet about 388, 1377, 14834), so the literal eigenvalue with
  alpha ~ N(0, 0.1) would shift pixels by ~1500, far off the 0-255 range. Krizhevsky's
  cuda-convnet code scales by the standard deviation sqrt(lambda_i), which gives shifts of
  a few levels (~12 along the first component); that is what is done here.

  Args:
    alpha: float32 [..., 3], one alpha per eigenvector.
    eigenvalues: [3] variances on 0-255 (`ColorStats.eigenvalues`).
    eigenvectors: [3, 3] with the eigenvectors as columns (`ColorStats.eigenvectors`).
  """
  alpha = tf.convert_to_tensor(alpha, tf.float32)
  return tf.linalg.matvec(tf.constant(lighting_matrix(eigenvalues, eigenvectors)), alpha)


def _mean_shape(mean) -> tf.TensorShape:
  """The static shape of a mean given as an array, a list or a (graph) tensor."""
  if isinstance(mean, (tf.Tensor, tf.Variable)):
    return mean.shape
  return tf.TensorShape(np.shape(mean))


def _mean_rank(mean) -> int:
  """0 for no mean, 1 for a per-channel mean, 3 for a per-pixel mean; ValueError otherwise."""
  if mean is None:
    return 0
  shape = _mean_shape(mean)
  if shape.rank not in (1, 3) or shape[-1] != 3:
    raise ValueError(f'mean must be [3] (per channel) or [height, width, 3] (per pixel), '
                     f'got shape {shape}')
  if shape.rank == 3 and not shape.is_fully_defined():
    raise ValueError(f'a per-pixel mean needs a static shape, got {shape}')
  return shape.rank


def _mean_tensor(mean) -> Optional[tf.Tensor]:
  if _mean_rank(mean) == 0:
    return None
  return tf.convert_to_tensor(mean, tf.float32)


def subtract_mean(image: tf.Tensor, mean, offset=None) -> tf.Tensor:
  """image - mean for float32 image [h, w, 3] or [batch, h, w, 3].

  A per-pixel mean [H, W, 3] is first cropped to the window of the image: rows
  offset_y .. offset_y + h and columns offset_x .. offset_x + w (offset None: the whole
  mean, whose size must then be the image's). A per-channel mean [3] is subtracted from
  every pixel.
  """
  mean = _mean_tensor(mean)
  if mean is None:
    return image
  if mean.shape.rank == 1:
    return add_per_channel(image, -mean)
  if offset is None:
    _check_mean_size(image.shape[-3:-1], mean)
    return image - mean
  offset = tf.cast(offset, tf.int32)
  size = image.shape[-3:-1] if image.shape[-3:-1].is_fully_defined() else tf.shape(image)[-3:-1]
  window = tf.slice(mean, tf.stack([offset[0], offset[1], 0]), tf.concat([size, [3]], 0))
  return image - window


def _check_mean_size(image_size: tf.TensorShape, mean: tf.Tensor) -> None:
  if image_size.is_fully_defined() and image_size != mean.shape[:2]:
    raise ValueError(f'the per-pixel mean image is {mean.shape[:2].as_list()} but the image '
                     f'is {image_size.as_list()}: the mean must have the stored image size')


def _mean_planes(mean) -> tf.Tensor:
  """[2, H, W, 3]: the per-pixel mean and its mirror image."""
  if isinstance(mean, np.ndarray):
    return tf.constant(np.stack([mean, mean[:, ::-1]]).astype(np.float32))
  mean = tf.convert_to_tensor(mean, tf.float32)
  return tf.stack([mean, flip_left_right(mean)])


def _size_checks(height, width, crop_size: int, mean, pad: int = 0) -> List[tf.Operation]:
  """Checks that a height x width image padded by `pad` holds the crop and that a per-pixel
  mean has its size: ValueError now if the sizes are ints, else run-time assertions."""
  mean_size = tuple(_mean_shape(mean)[:2]) if _mean_rank(mean) == 3 else None
  if isinstance(height, int) and isinstance(width, int):
    if min(height, width) + 2 * pad < crop_size:
      raise ValueError(f'a {height}x{width} image' + (f' padded by {pad}' if pad else '') +
                       f' is smaller than the crop size {crop_size}')
    if mean_size is not None and mean_size != (height, width):
      raise ValueError(f'the per-pixel mean image is {list(mean_size)} but the image is '
                       f'{[height, width]}: the mean must have the stored image size')
    return []
  checks = [tf.debugging.assert_greater_equal(
      tf.minimum(height, width) + 2 * pad, crop_size,
      message=f'the stored image is smaller than the crop size {crop_size}: convert the '
              f'dataset at a larger size or lower DataConfig.crop_size')]
  if mean_size is not None:
    checks.append(tf.debugging.assert_equal(
        tf.stack([height, width]), tf.constant(mean_size, tf.int32),
        message='the image size differs from the per-pixel mean image (the stored image '
                'size); re-convert the dataset or use subtract_mean="rgb"'))
  return checks


# ----------------------------------------------------------------------------------------
# Decoding


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes a JPEG or PNG (any format `tf.io.decode_image` reads) to uint8 RGB [H, W, 3]."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def jpeg_crop_window(offset, crop_size: int, width) -> Tuple[tf.Tensor, tf.Tensor]:
  """Where `tf.io.decode_and_crop_jpeg` must decode a crop to get a full decode's pixels.

  With subsampled chroma (4:2:0, the JPEG default) libjpeg upsamples a partial decode as if
  the image ended at the decoded region, so window columns on a 16-pixel boundary would
  differ from a full decode by up to ~30 levels. Decoding one more column on each side
  (where the image has one) gives every window column its real neighbours.

  Args:
    offset: int32 [..., 2], the (y, x) corners of crop_size windows.
    width: the image width, an int or an int32 tensor broadcastable to [...].

  Returns:
    (int32 [..., 4]: the crop_window (y, x, height, width) to decode, int32 [..., 3]: the
    begin (0, left, 0) of the crop in the decoded region, for `tf.slice`).
  """
  offset = tf.cast(offset, tf.int32)
  y, x = offset[..., 0], offset[..., 1]
  left = tf.minimum(x, 1)
  right = tf.minimum(width - x - crop_size, 1)
  window = tf.stack([y, x - left, tf.fill(tf.shape(y), crop_size),
                     crop_size + left + right], axis=-1)
  zeros = tf.zeros_like(left)
  return window, tf.stack([zeros, left, zeros], axis=-1)


def _decode_jpeg_window(encoded: tf.Tensor, offset, crop_size: int, width) -> tf.Tensor:
  """`tf.io.decode_and_crop_jpeg` of the window, with exactly the pixels of a full decode
  (see `jpeg_crop_window`)."""
  window, begin = jpeg_crop_window(offset, crop_size, width)
  return _decode_jpeg_at(encoded, window, begin, crop_size)


def _decode_jpeg_at(encoded: tf.Tensor, window, begin, crop_size: int) -> tf.Tensor:
  """The crop from a `jpeg_crop_window` (window [4], begin [3]): uint8 [crop, crop, 3]."""
  wider = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
  return tf.slice(wider, begin, [crop_size, crop_size, 3])


def decode_crop(encoded: tf.Tensor, offset, crop_size: int) -> tf.Tensor:
  """The crop_size window at `offset` (y, x) of an encoded image: uint8 [crop, crop, 3].

  JPEGs go through the fused `tf.io.decode_and_crop_jpeg`, which skips most of the work
  outside the window; other formats (the CIFAR-10 PNGs) are decoded whole and sliced. Both
  give exactly the pixels of a full decode followed by slicing.
  """
  offset = tf.cast(offset, tf.int32)
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: _decode_jpeg_window(encoded, offset, crop_size,
                                  tf.io.extract_jpeg_shape(encoded)[1]),
      lambda: crop(decode_image(encoded), offset, crop_size))
  image.set_shape([crop_size, crop_size, 3])
  return image


def resize_to_stored(image: tf.Tensor, size: int) -> tf.Tensor:
  """An arbitrary uint8 image [H, W, 3] brought to the stored size: uint8 [size, size, 3].

  Like the converter (`convert.images.resize_center_crop`, paper section 2): the central
  min(H, W) square, rescaled to size x size with an antialiased bicubic filter (Keys, a=-0.5,
  as Pillow's BICUBIC), by one resampling of the source. An image already size x size is
  returned unchanged, so a JPEG of the stored size gets exactly the ops of the TFRecord eval
  path. Other sizes agree with the converter's Pillow output within a few levels (Pillow
  resamples in fixed point).
  """
  image = tf.convert_to_tensor(image)
  shape = tf.shape(image)

  def resample():  # its ops run only for images not already size x size
    height, width = shape[0], shape[1]
    side = tf.cast(tf.minimum(height, width), tf.float32)
    scale = size / side
    # ScaleAndTranslate samples input position (x + 0.5 - t) / scale for output pixel x;
    # t = -left * scale puts the (possibly half-pixel) left edge of the square at 0.
    left = (tf.cast(width, tf.float32) - side) / 2.0
    top = (tf.cast(height, tf.float32) - side) / 2.0
    resized = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(image, tf.float32)[tf.newaxis], size=[size, size],
        scale=tf.stack([scale, scale]), translation=tf.stack([-top * scale, -left * scale]),
        kernel_type='keyscubic', antialias=True)[0]
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

  same = tf.reduce_all(tf.equal(shape[:2], size))  # four small ops on every served request
  result = tf.cond(same, lambda: tf.identity(image), resample)
  result.set_shape([size, size, 3])
  return result


def decode_for_serving(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """Any JPEG/PNG/GIF/BMP file -> uint8 [size, size, 3], as the converter would store it."""
  return resize_to_stored(decode_image(encoded), size)


# ----------------------------------------------------------------------------------------
# Training


def _lighting_shift(alpha, color_stats: Optional[records.ColorStats]) -> Optional[tf.Tensor]:
  if alpha is None:
    return None
  if color_stats is None:
    raise ValueError('PCA lighting (DataConfig.pca_lighting_std > 0) needs the colour '
                     'statistics of the training set (DatasetMetadata.color_stats); set '
                     'pca_lighting_std=0 to train without it')
  return lighting_offset(alpha, color_stats.eigenvalues, color_stats.eigenvectors)


def _mirror(image: tf.Tensor, flip: Optional[tf.Tensor]) -> tf.Tensor:
  """image [..., H, W, C] mirrored where the scalar `flip` is true (None: never)."""
  if flip is None:
    return image
  return tf.cond(flip, lambda: flip_left_right(image), lambda: image)


def train_crop(image: tf.Tensor, data_config: config_lib.DataConfig, seed,
               mean=None) -> Tuple[tf.Tensor, TrainParams]:
  """The integer stage of training (pad == 0) for one decoded stored image.

  Draws the window, mirror and lighting alphas from `seed` (`sample_train_params`), cuts the
  window and mirrors it; the float stage is `finish_train_batch`.

  Args:
    image: uint8 [H, W, 3], a decoded stored image.
    data_config: crop_size, random_flip, pca_lighting_std; pad must be 0.
    seed: int [2].
    mean: only its size matters: a per-pixel mean [H, W, 3] must have the image's size.

  Returns:
    (uint8 [crop, crop, 3], already mirrored where params.flip; TrainParams of scalars:
    offset int32 [2] in the stored image, flip bool [] or None, alpha float32 [3] or None).
  """
  check_data_config(data_config)
  _check_no_pad(data_config)
  crop_size = data_config.crop_size
  image = tf.convert_to_tensor(image)
  height, width = _spatial_size(image)
  with tf.control_dependencies(_size_checks(height, width, crop_size, mean)):
    params = sample_train_params(seed, height, width, data_config)
  return train_crop_with(image, params, crop_size), params


def train_crop_with(image: tf.Tensor, params: TrainParams, crop_size: int) -> tf.Tensor:
  """The window of uint8 image [H, W, 3] at params.offset, mirrored where params.flip (scalar
  params): uint8 [crop, crop, 3]."""
  return _mirror(crop(image, params.offset, crop_size), params.flip)


def decode_train_crop(encoded: tf.Tensor, data_config: config_lib.DataConfig, seed,
                      mean=None, check_sizes: bool = True) -> Tuple[tf.Tensor, TrainParams]:
  """`train_crop` of an encoded stored image, decoding only the crop.

  For JPEG the window is drawn from the header's size (`tf.io.extract_jpeg_shape`) and
  decoded with the fused `tf.io.decode_and_crop_jpeg` (pixel for pixel a full decode's, see
  `_decode_jpeg_window`); other formats (PNG) are decoded whole and sliced. The random
  choices are those of `train_crop` (and `preprocess_for_train`) for the same seed, so the
  results equal `train_crop(decode_image(encoded), ...)` exactly.

  Args:
    encoded: string [], a JPEG or PNG file.
    data_config: crop_size, random_flip, pca_lighting_std; pad must be 0.
    seed: int [2].
    mean: only its size matters: a per-pixel mean [H, W, 3] must have the image's size.
    check_sizes: check at run time that the image holds the crop and has the size of a
      per-pixel mean (InvalidArgumentError if not). Pass False only when the sizes are known
      to be right (`DatasetMetadata.image_size` checked beforehand): it saves a few ops per
      image.

  Returns:
    (uint8 [crop, crop, 3], mirrored where params.flip; TrainParams of scalars, as
    `train_crop`).
  """
  check_data_config(data_config)
  _check_no_pad(data_config)
  crop_size = data_config.crop_size
  uniform, normal_seed = _draws(seed, ())
  flip, alpha = _flip_and_alpha(uniform, normal_seed, data_config, ())

  def offset_for(height, width):
    checks = _size_checks(height, width, crop_size, mean) if check_sizes else []
    with tf.control_dependencies(checks):
      return crop_offset(uniform[:2], height, width, crop_size)

  def from_jpeg():
    shape = tf.io.extract_jpeg_shape(encoded)
    offset = offset_for(shape[0], shape[1])
    return _decode_jpeg_window(encoded, offset, crop_size, shape[1]), offset

  def from_other():
    image = decode_image(encoded)
    shape = tf.shape(image)
    offset = offset_for(shape[0], shape[1])
    return crop(image, offset, crop_size), offset

  image, offset = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
  image.set_shape([crop_size, crop_size, 3])
  return _mirror(image, flip), TrainParams(offset, flip, alpha)


class CropPlan(NamedTuple):
  """The random choices of images of a known stored size, with where to decode their crops
  (`plan_train_crops`); one image's, or with batch dimensions a batch's."""
  params: TrainParams  # offset int32 [..., 2], flip bool [...] or None, alpha [..., 3] or None
  jpeg_window: tf.Tensor  # int32 [..., 4]: `jpeg_crop_window`'s region to decode
  jpeg_begin: tf.Tensor  # int32 [..., 3]: the crop's corner in that region


def plan_train_crops(seed, stored_size: Tuple[int, int], data_config: config_lib.DataConfig,
                     count: int, mean=None) -> CropPlan:
  """The training choices of `count` images of the stored size, drawn together from one seed.

  The same distribution as `decode_train_crop` draws per image (uniform window positions,
  mirror with p = 1/2, alpha ~ N(0, pca_lighting_std)), but a handful of ops for all
  `count` images instead of a dozen per image in the tf.data map (`sample_train_params`
  with a batch dimension, plus the JPEG decode windows for the known width). The sizes are
  checked here, once: ValueError if the stored images cannot hold the crop or differ from a
  per-pixel mean.

  Args:
    seed: int [2].
    stored_size: (height, width) of every stored image (`DatasetMetadata.image_size`).
    data_config: crop_size, random_flip, pca_lighting_std; pad must be 0.
    count: images planned.
    mean: only its size matters: a per-pixel mean [H, W, 3] must have the stored size.

  Returns:
    CropPlan with leading dimension [count]; row i goes to `decode_planned_crop` (or
    `train_crop_with`) of image i.
  """
  check_data_config(data_config)
  _check_no_pad(data_config)
  height, width = (int(d) for d in stored_size)
  crop_size = data_config.crop_size
  _size_checks(height, width, crop_size, mean)  # ints: raises now, builds no ops
  params = sample_train_params(seed, height, width, data_config, batch_shape=[count])
  window, begin = jpeg_crop_window(params.offset, crop_size, width)
  return CropPlan(params, window, begin)


def decode_planned_crop(encoded: tf.Tensor, plan: CropPlan, crop_size: int) -> tf.Tensor:
  """The integer stage of one encoded stored image for its row of `plan_train_crops`.

  JPEG: the fused decode of plan.jpeg_window, sliced at plan.jpeg_begin (exactly a full
  decode's pixels, see `jpeg_crop_window`); other formats (PNG): decoded whole and sliced at
  plan.params.offset. Then mirrored where plan.params.flip. The image must have the stored
  size the plan was made for (not checked here).

  Args:
    encoded: string [], a JPEG or PNG file.
    plan: CropPlan of scalars (one row of a plan).

  Returns:
    uint8 [crop, crop, 3], equal to `train_crop_with(decode_image(encoded), plan.params,
    crop_size)`.
  """
  # The format is a per-example property (`records.IMAGE_FORMAT`), not one of the dataset,
  # so it is looked at per image; the cond measured a few microseconds per image.
  image = tf.cond(tf.io.is_jpeg(encoded),
                  lambda: _decode_jpeg_at(encoded, plan.jpeg_window, plan.jpeg_begin,
                                          crop_size),
                  lambda: crop(decode_image(encoded), plan.params.offset, crop_size))
  image.set_shape([crop_size, crop_size, 3])
  return _mirror(image, plan.params.flip)


def _check_no_pad(data_config: config_lib.DataConfig) -> None:
  if data_config.pad:
    raise ValueError(f'cutting the crop per image needs DataConfig.pad == 0, got pad='
                     f'{data_config.pad}; padded images are augmented whole '
                     f'(preprocess_for_train, augment_batch)')


def _mean_windows(mean, offsets, flips, crop_size: int, batch_size: Optional[int]) -> tf.Tensor:
  """The per-pixel mean [H, W, 3] cut at each image's window, mirrored like the image.

  Args:
    offsets: int32 [batch, 2] window corners (y, x) in the stored image.
    flips: bool [batch], or None for no mirroring.
    batch_size: the static batch size, or None.

  Returns:
    float32 [batch, crop, crop, 3].
  """
  offsets = tf.cast(offsets, tf.int32)
  rows, columns = offsets[:, 0], offsets[:, 1]
  if flips is None:
    planes = _mean_tensor(mean)[tf.newaxis]
    plane = tf.zeros_like(rows)
  else:
    planes = _mean_planes(mean)
    plane = tf.cast(flips, tf.int32)
    # The mirrored window [x, x + c) of the mean is columns [W - x - c, W - x) of its mirror.
    columns = tf.where(flips, _mean_shape(mean)[1] - columns - crop_size, columns)
  begins = tf.stack([plane, rows, columns, tf.zeros_like(rows)], axis=1)  # [batch, 4]
  size = [1, crop_size, crop_size, 3]
  if batch_size:
    # One slice per image copies whole window rows; with the two batched gathers of
    # `crop_flip_batch` (the column gather copies 3 floats per index) the whole float stage
    # of 128 227x227 crops ran 2.3x slower.
    return tf.concat([tf.slice(planes, begin, size)
                      for begin in tf.unstack(begins, num=batch_size)], axis=0)
  return tf.map_fn(lambda begin: tf.slice(planes, begin, size)[0], begins,
                   fn_output_signature=tf.float32)


def finish_train_batch(crops: tf.Tensor, params: TrainParams, mean,
                       color_stats: Optional[records.ColorStats]) -> tf.Tensor:
  """The float stage of training (pad == 0) for a batch of crops from `train_crop` or
  `decode_train_crop`: float32, minus the mean cut at each image's window (and mirrored like
  it), plus each image's PCA lighting shift.

  Meant to run where the net runs (a GPU; on a CPU inside the training step), not per
  image in tf.data: its output has 4x the bytes of the uint8 crops.

  Args:
    crops: uint8 [batch, crop, crop, 3] (static crop size), already mirrored where
      params.flip.
    params: TrainParams with a batch dimension: offset int32 [batch, 2] (the window corners
      in the stored image), flip bool [batch] or None, alpha float32 [batch, 3] or None.
    mean: None, [3] or [H, W, 3] of the stored size (see the module docstring).
    color_stats: the training-set statistics for PCA lighting (None if it is disabled).

  Returns:
    float32 [batch, crop, crop, 3]; for every image exactly what cropping the stored image
    and the mean identically, subtracting, mirroring and adding the lighting shift gives
    (up to float rounding of the shift).
  """
  crops = tf.convert_to_tensor(crops)
  shape = crops.shape
  if (shape.rank != 4 or not shape[1:].is_fully_defined() or shape[1] != shape[2] or
      shape[3] != 3):
    raise ValueError(f'crops must be [batch, crop, crop, 3] with a static crop size, got '
                     f'{shape}')
  x = tf.cast(crops, tf.float32)
  if _mean_rank(mean) == 3:
    x = x - _mean_windows(mean, params.offset, params.flip, shape[1], shape[0])
  else:
    x = subtract_mean(x, mean)
  shift = _lighting_shift(params.alpha, color_stats)
  return x if shift is None else add_per_channel(x, shift)


def _finish_one(image: tf.Tensor, params: TrainParams, mean,
                color_stats: Optional[records.ColorStats]) -> tf.Tensor:
  """`finish_train_batch` of one crop [crop, crop, 3] with scalar params."""
  batched = TrainParams(*[None if p is None else tf.convert_to_tensor(p)[tf.newaxis]
                          for p in params])
  return finish_train_batch(image[tf.newaxis], batched, mean, color_stats)[0]


def augment_crop(image: tf.Tensor, params: TrainParams, mean,
                 color_stats: Optional[records.ColorStats]) -> tf.Tensor:
  """The augmentation of training (pad == 0) for a window already cut from the stored image.

  uint8 crop [crop, crop, 3] at params.offset of the stored image -> mirrored if
  params.flip -> `finish_train_batch` (float32, minus the mean cropped to the same window and
  mirrored alike, plus the PCA lighting shift for params.alpha).

  Args:
    params: TrainParams of scalars: offset [2], flip [] or None, alpha [3] or None.

  Returns:
    float32 [crop, crop, 3].
  """
  image = tf.convert_to_tensor(image)
  return _finish_one(_mirror(image, params.flip), params, mean, color_stats)


def preprocess_for_train(image: tf.Tensor, mean, color_stats: Optional[records.ColorStats],
                         data_config: config_lib.DataConfig, seed) -> tf.Tensor:
  """Random training augmentation of one decoded stored image.

  pad == 0: random crop_size window, minus the mean cropped alike, mirror, lighting
  (`train_crop`, then `finish_train_batch` on a batch of one).
  pad > 0: minus the whole mean, zero padding of `pad`, random window, mirror, lighting.

  Args:
    image: uint8 [H, W, 3], a decoded stored image.
    mean: None, [3] or [H, W, 3] (see the module docstring).
    color_stats: the training-set statistics for PCA lighting (None if it is disabled).
    data_config: crop_size, pad, random_flip, pca_lighting_std.
    seed: int [2]; the same seed gives the same window, mirror and lighting.

  Returns:
    float32 [crop_size, crop_size, 3].
  """
  check_data_config(data_config)
  crop_size, pad = data_config.crop_size, data_config.pad
  if pad == 0:
    window, params = train_crop(image, data_config, seed, mean)
    return _finish_one(window, params, mean, color_stats)
  height, width = _spatial_size(image)
  with tf.control_dependencies(_size_checks(height, width, crop_size, mean, pad)):
    params = sample_train_params(seed, height + 2 * pad, width + 2 * pad, data_config)
  x = pad_image(subtract_mean(tf.cast(image, tf.float32), mean), pad)
  x = _mirror(crop(x, params.offset, crop_size), params.flip)
  shift = _lighting_shift(params.alpha, color_stats)
  return x if shift is None else add_per_channel(x, shift)


def preprocess_encoded_for_train(encoded: tf.Tensor, mean,
                                 color_stats: Optional[records.ColorStats],
                                 data_config: config_lib.DataConfig, seed,
                                 check_sizes: bool = True) -> tf.Tensor:
  """`preprocess_for_train` (pad == 0) of an encoded stored image, decoding only the crop.

  `decode_train_crop`, then `finish_train_batch` on a batch of one; the result equals
  `preprocess_for_train(decode_image(encoded), ...)` for the same seed exactly.

  Args:
    check_sizes: see `decode_train_crop`.

  Returns:
    float32 [crop_size, crop_size, 3].
  """
  window, params = decode_train_crop(encoded, data_config, seed, mean, check_sizes)
  return _finish_one(window, params, mean, color_stats)


def augment_batch_with(images: tf.Tensor, params: TrainParams, mean,
                       color_stats: Optional[records.ColorStats],
                       data_config: config_lib.DataConfig) -> tf.Tensor:
  """`preprocess_for_train` of a whole batch for given random choices.

  Args:
    images: uint8 [batch, H, W, 3], stored images of one size.
    params: offsets [batch, 2] in the padded image, flips [batch], alphas [batch, 3].
    mean: None, [3] or [H, W, 3].

  Returns:
    float32 [batch, crop, crop, 3].
  """
  x = tf.cast(images, tf.float32)
  mean = _mean_tensor(mean)
  if mean is not None and mean.shape.rank == 3:
    _check_mean_size(x.shape[-3:-1], mean)
    x = x - mean  # [H, W, 3] broadcast over the batch: the outer dimension, vectorised
  elif mean is not None:
    x = add_per_channel(x, -mean)
  x = pad_image(x, data_config.pad)
  x = crop_flip_batch(x, params.offset, params.flip, data_config.crop_size)
  shift = _lighting_shift(params.alpha, color_stats)
  return x if shift is None else add_per_channel(x, shift)


def augment_batch(images: tf.Tensor, mean, color_stats: Optional[records.ColorStats],
                  data_config: config_lib.DataConfig, seed) -> tf.Tensor:
  """`preprocess_for_train` of a batch: uint8 [batch, H, W, 3] -> float32 [batch, crop, crop, 3].

  One window, mirror and alpha per image from `seed` (`sample_train_params`), applied by
  `augment_batch_with`: a handful of ops per batch instead of per image, which is what
  matters for 32x32 images, where per-op overhead outweighs the arithmetic.
  """
  check_data_config(data_config)
  images = tf.convert_to_tensor(images)
  shape = tf.shape(images)
  pad = data_config.pad
  height, width = _spatial_size(images[0])
  with tf.control_dependencies(_size_checks(height, width, data_config.crop_size, mean, pad)):
    params = sample_train_params(seed, height + 2 * pad, width + 2 * pad, data_config,
                                 batch_shape=[shape[0]])
  return augment_batch_with(images, params, mean, color_stats, data_config)


# ----------------------------------------------------------------------------------------
# Evaluation and serving


def centre_crop_batch_for_eval(images: tf.Tensor, mean,
                               data_config: config_lib.DataConfig) -> tf.Tensor:
  """`preprocess_for_eval` (centre crop) of a whole batch of stored-size images at once.

  Args:
    images: uint8 [batch, H, W, 3] with H and W known statically.
    mean: None, [3] or [H, W, 3].

  Returns:
    float32 [batch, crop, crop, 3], equal to stacking `preprocess_for_eval` of each image;
    a few ops per batch instead of per image (the serving receiver's batch-1 latency).
  """
  check_data_config(data_config)
  crop_size, pad = data_config.crop_size, data_config.pad
  height, width = images.shape[1], images.shape[2]
  if height is None or width is None:
    raise ValueError(f'centre_crop_batch_for_eval needs a static image size, got {images.shape}')
  if min(height, width) + 2 * pad < crop_size:
    raise ValueError(f'images of {height}x{width} (padded by {pad}) are smaller than the '
                     f'{crop_size}x{crop_size} crop')
  x = subtract_mean(tf.cast(images, tf.float32), mean)
  top, left = central_crop_offset(height + 2 * pad, width + 2 * pad, crop_size)
  # The window in the unpadded image's coordinates: when it lies inside the image (CIFAR-10:
  # 32 + 2 * 4 padded, the centre 32 is the image itself) the zeros are never read, and the
  # pad and slice ops would only add latency to every served request.
  top, left = top - pad, left - pad
  if min(top, left) < 0 or top + crop_size > height or left + crop_size > width:
    x, top, left = pad_image(x, pad), top + pad, left + pad
  if (top, left, crop_size, crop_size) == (0, 0, x.shape[1], x.shape[2]):
    return x
  return x[:, top:top + crop_size, left:left + crop_size, :]


def preprocess_for_eval(image: tf.Tensor, mean, data_config: config_lib.DataConfig,
                        ten_crop: bool = False) -> tf.Tensor:
  """The test-time input of one stored-size image (also the serving receiver's).

  uint8 [H, W, 3] -> float32 -> minus the mean (a per-pixel mean must be H x W) -> zero pad
  by DataConfig.pad -> the centre crop_size crop, or the ten crops (`ten_crops` order).

  Returns:
    float32 [crop, crop, 3], or [10, crop, crop, 3] with ten_crop=True.
  """
  check_data_config(data_config)
  image = tf.convert_to_tensor(image)
  crop_size, pad = data_config.crop_size, data_config.pad
  height, width = _spatial_size(image)
  with tf.control_dependencies(_size_checks(height, width, crop_size, mean, pad)):
    x = tf.cast(image, tf.float32)
  x = pad_image(subtract_mean(x, mean), pad)
  if ten_crop:
    return ten_crops(x, crop_size)
  height, width = _spatial_size(x)
  return crop(x, tf.stack(central_crop_offset(height, width, crop_size)), crop_size)
