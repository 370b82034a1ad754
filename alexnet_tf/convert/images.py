"""Reading, validating and encoding one image with Pillow and NumPy (runs in worker processes).

Every image is decoded in full, so a truncated or corrupt file is caught here rather than
in the middle of training. Files are read only in ACCEPTED_FORMATS and up to `max_pixels`
(checked from the header, before anything is decoded). What gets stored is always JPEG or
PNG, the two formats training and serving decode:

  - an RGB JPEG that needs no resizing: the original bytes, untouched (flagged `verbatim`:
    the parent process checks them with TensorFlow's decoder, which is stricter than Pillow's);
  - any other file (CMYK or grayscale JPEG, PNG, a PNG named .JPEG, GIF, WebP, ...):
    converted to RGB and re-encoded as JPEG at `jpeg_quality`;
  - pixel arrays (the CIFAR-10 pickles): lossless PNG.
"""

import dataclasses
import io
import os
import stat
import warnings

import numpy as np
from PIL import Image

JPEG = 'jpeg'
PNG = 'png'
DEFAULT_JPEG_QUALITY = 95
# The serving limit (decoding.MAX_SERVING_PIXELS, which imports TensorFlow and so cannot be
# imported here): what converts can also be served. A 6000x4000 photo is 24 M; decoding the
# maximum costs a worker ~75 MB (RGB) to ~200 MB (16-bit RGBA), where Pillow's own guard would
# let through 179 M pixels (4-5 GB).
DEFAULT_MAX_PIXELS = 25_000_000
# The most training decodes (decoding.MAX_STORED_PIXELS), so the highest limit allowed here.
MAX_PIXELS = 100_000_000
# Pillow's names of the formats read (JPEG includes MPO, which Pillow identifies as a JPEG), and
# the file name extensions the folder converter takes for images.
ACCEPTED_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'TIFF', 'WEBP', 'PPM')
EXTENSIONS = frozenset(['.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp',
                        '.ppm', '.pgm', '.pbm'])

_PIL_FORMATS = {JPEG: 'JPEG', PNG: 'PNG'}
# Pillow's names of files any JPEG decoder reads; MPO is a camera JPEG with extra frames.
_JPEG_FORMATS = ('JPEG', 'MPO')
_WHITE = (255, 255, 255, 255)


class BadImageError(Exception):
  """An unusable image; `str(error)` is the reason written to the skip report."""


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedImage:
  """The bytes to store and the RGB pixels they hold.

  For re-encoded JPEGs `pixels` are the values before JPEG quantisation: the colour
  statistics are computed from them, which differs from a decode of `data` by rounding only.
  """
  data: bytes
  format: str  # JPEG or PNG
  pixels: np.ndarray  # uint8 [height, width, 3], RGB
  verbatim: bool = False  # `data` is the source file's bytes, decoded by Pillow only

  @property
  def height(self) -> int:
    return self.pixels.shape[0]

  @property
  def width(self) -> int:
    return self.pixels.shape[1]


def max_file_bytes(max_pixels: int) -> int:
  """The largest file read for an image of `max_pixels`: uncompressed 16-bit RGBA (8 bytes a
  pixel, the most any accepted format stores) plus 1 MiB of metadata."""
  return 8 * max_pixels + (1 << 20)


_FILE_TYPES = ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
               (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'),
               (stat.S_ISDIR, 'a directory'))


def read_file(path: str, max_bytes: int) -> bytes:
  """The bytes of a regular file of at most `max_bytes`; BadImageError for anything else.

  Opened without blocking and checked before reading: a FIFO would block open() and read()
  forever, a link to /dev/zero would read until memory runs out.
  """
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  except OSError as error:
    raise BadImageError(f'cannot read: {error.strerror or error}') from None
  with open(fd, 'rb') as f:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
      kind = next((name for test, name in _FILE_TYPES if test(mode)), 'a special file')
      raise BadImageError(f'not a regular file ({kind})')
    try:
      data = f.read(max_bytes + 1)
    except OSError as error:
      raise BadImageError(f'cannot read: {error.strerror or error}') from None
  if len(data) > max_bytes:
    raise BadImageError(f'too large: more than {max_bytes} bytes, the most an image within '
                        f'the pixel limit takes (--max-pixels)')
  return data


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
  """Decodes a whole image file; raises BadImageError with the reason if that fails.

  Only ACCEPTED_FORMATS are read, and only images of at most `max_pixels` (width x height,
  from the header) are decoded.
  """
  if not data:
    raise BadImageError('empty file (0 bytes)')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # EXIF / ICC profile complaints about usable files
      image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
      width, height = image.size
      if width * height > max_pixels:
        raise BadImageError(f'too large: {width}x{height} is {width * height} pixels, over '
                            f'the limit of {max_pixels} (--max-pixels)')
      image.load()  # open() reads only the header; load() decodes every pixel
  except BadImageError:
    raise
  except Image.UnidentifiedImageError:
    raise BadImageError(f'not an image in an accepted format ({", ".join(ACCEPTED_FORMATS)})'
                        ) from None
  except Image.DecompressionBombError as error:  # Pillow's guard, if max_pixels is above it
    raise BadImageError(f'too large: {error}') from None
  except Exception as error:  # pylint: disable=broad-except
    # Pillow's decoders signal corrupt data with OSError, SyntaxError, ValueError, EOFError,
    # struct.error, ...: any of them makes this one image unusable, never the run.
    raise BadImageError(f'corrupt or truncated: {type(error).__name__}: {error}') from None
  return image


def to_rgb(image: Image.Image) -> Image.Image:
  """An 8-bit RGB copy: CMYK and grayscale converted, transparency flattened onto white."""
  if image.mode == 'RGB':
    return image
  if image.mode.startswith('I') or image.mode == 'F':
    # 16-bit grayscale PNG/TIFF: Pillow's convert() would clip everything above 255 to white.
    levels = np.asarray(image, dtype=np.float64)
    scale = 257.0 if image.mode.startswith('I') and levels.max(initial=0) > 255 else 1.0
    image = Image.fromarray(np.clip(np.round(levels / scale), 0, 255).astype(np.uint8), 'L')
  if image.mode == 'P':
    image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    # Transparent pixels often hold black or garbage colour; white is what viewers show.
    image = Image.alpha_composite(Image.new('RGBA', image.size, _WHITE), image.convert('RGBA'))
  return image.convert('RGB')  # CMYK (Pillow undoes Adobe's inverted CMYK), L, 1, YCbCr, ...


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Rescales the shorter side to `size` and keeps the central size x size square (paper 2).

  Done as one resampling of the central square of the source, which is the same crop
  without the intermediate image.
  """
  width, height = image.size
  side = min(width, height)
  left = (width - side) / 2
  top = (height - side) / 2
  return image.resize((size, size), Image.Resampling.BICUBIC,
                      box=(left, top, left + side, top + side))


def encode_file(data: bytes, resize: int = 0, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> EncodedImage:
  """Validates an image file and returns what to store.

  Args:
    data: the file's bytes.
    resize: 0 keeps the size; otherwise the output is resize x resize (`resize_center_crop`).
    jpeg_quality: the JPEG quality of re-encoded images.
    max_pixels: larger images are refused from their header (`decode`).

  Returns:
    The original bytes if they are an RGB JPEG of the right size, else an RGB JPEG.

  Raises:
    BadImageError: the file is empty, not an image of ACCEPTED_FORMATS, too large, corrupt
      or truncated.
  """
  image = decode(data, max_pixels)
  if image.format in _JPEG_FORMATS and image.mode == 'RGB' and (
      not resize or image.size == (resize, resize)):
    return EncodedImage(data, JPEG, np.asarray(image), verbatim=True)
  try:
    rgb = to_rgb(image)
    if resize:
      rgb = resize_center_crop(rgb, resize)
    return EncodedImage(_encode(rgb, JPEG, jpeg_quality), JPEG, np.asarray(rgb))
  except Exception as error:  # pylint: disable=broad-except
    # An exotic mode Pillow cannot convert (LAB, HSV, ...) makes this one image unusable.
    raise BadImageError(f'cannot convert {image.mode} {image.format} to an RGB JPEG: '
                        f'{type(error).__name__}: {error}') from None


def encode_pixels(pixels: np.ndarray, resize: int = 0, image_format: str = PNG,
                  jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> EncodedImage:
  """Encodes a uint8 RGB array [height, width, 3], resized like `encode_file`."""
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
    raise ValueError(f'expected uint8 pixels [height, width, 3], got {pixels.dtype} '
                     f'{list(pixels.shape)}')
  image = Image.fromarray(pixels, 'RGB')
  if resize and image.size != (resize, resize):
    image = resize_center_crop(image, resize)
  return EncodedImage(_encode(image, image_format, jpeg_quality), image_format,
                      np.asarray(image))


def _encode(image: Image.Image, image_format: str, jpeg_quality: int) -> bytes:
  buffer = io.BytesIO()
  if image_format == JPEG:
    image.save(buffer, format='JPEG', quality=jpeg_quality)
  else:
    image.save(buffer, format=_PIL_FORMATS[image_format])
  return buffer.getvalue()
