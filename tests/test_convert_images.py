"""Units of the converter's image handling, Example encoding, statistics and splitting."""

import collections
import io

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from alexnet_tf import records
from alexnet_tf.convert import example
from alexnet_tf.convert import images
from alexnet_tf.convert import split
from alexnet_tf.convert import stats
from alexnet_tf.convert.errors import ConversionError


def _encode(array, image_format, mode=None, **kwargs):
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **kwargs)
  return buffer.getvalue()


def _decode(data):
  return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope='module')
def chelsea():
  return skimage.data.chelsea()  # uint8 [300, 451, 3]


class TestEncodeFile:

  def test_rgb_jpeg_is_kept_byte_for_byte(self, chelsea):
    data = _encode(chelsea, 'JPEG', quality=90)
    encoded = images.encode_file(data)
    assert encoded.data is data
    assert encoded.format == images.JPEG
    np.testing.assert_array_equal(encoded.pixels, _decode(data))

  def test_camera_mpo_jpeg_is_kept_byte_for_byte(self, chelsea):
    image = Image.fromarray(chelsea)
    buffer = io.BytesIO()
    image.save(buffer, format='MPO', save_all=True, append_images=[image])
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).format == 'MPO'
    assert images.encode_file(data).data is data

  def test_a_failed_conversion_skips_the_image(self, chelsea, monkeypatch):
    def unsupported(image):
      raise ValueError(f'conversion from {image.mode} to RGB not supported')
    monkeypatch.setattr(images, 'to_rgb', unsupported)
    with pytest.raises(images.BadImageError, match='cannot convert RGB PNG to an RGB JPEG'):
      images.encode_file(_encode(chelsea, 'PNG'))

  @pytest.mark.parametrize('mode', ['CMYK', 'L'])
  def test_cmyk_and_grayscale_jpegs_become_rgb_jpegs(self, chelsea, mode):
    data = _encode(chelsea, 'JPEG', mode=mode, quality=95)
    encoded = images.encode_file(data)
    stored = Image.open(io.BytesIO(encoded.data))
    assert (stored.format, stored.mode, stored.size) == ('JPEG', 'RGB', (451, 300))
    expected = np.asarray(Image.fromarray(chelsea).convert(mode).convert('RGB'), np.float64)
    assert np.abs(np.asarray(stored, np.float64) - expected).mean() < 3

  def test_png_named_jpeg_is_reencoded_as_jpeg(self, chelsea):
    encoded = images.encode_file(_encode(chelsea, 'PNG'))
    assert encoded.format == images.JPEG and encoded.data[:2] == b'\xff\xd8'
    np.testing.assert_array_equal(encoded.pixels, chelsea)  # the pixels before JPEG rounding
    assert np.abs(_decode(encoded.data).astype(float) - chelsea).mean() < 3

  def test_transparency_is_flattened_onto_white(self):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, 3] = 255  # the top half opaque black, the bottom half transparent
    encoded = images.encode_file(_encode(rgba, 'PNG'))
    assert encoded.pixels[:4].max() == 0 and encoded.pixels[4:].min() == 255

  def test_16_bit_grayscale_is_scaled_not_clipped(self):
    levels = np.full((4, 4), 32768, np.uint16)
    encoded = images.encode_file(_encode(levels, 'PNG'))
    np.testing.assert_array_equal(encoded.pixels, np.full((4, 4, 3), 128))

  @pytest.mark.parametrize('cut, reason', [
      (0, 'empty file'), (0.5, 'truncated'), (-10, 'truncated')])
  def test_unusable_files_raise_with_a_reason(self, chelsea, cut, reason):
    data = _encode(chelsea, 'JPEG')
    data = data[:int(cut * len(data))] if isinstance(cut, float) else data[:cut]
    with pytest.raises(images.BadImageError, match=reason):
      images.encode_file(data)

  def test_a_text_file_is_not_an_image(self):
    with pytest.raises(images.BadImageError, match='not an image'):
      images.encode_file(b'Content-Type: text/plain\n\nnot an image\n')

  def test_resize_is_shorter_side_then_central_crop(self):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    encoded = images.encode_file(_encode(pixels, 'PNG'), resize=20)
    assert encoded.pixels.shape == (20, 20, 3)
    # The paper's recipe done literally: shorter side 40 -> 20 (80 -> 40), then the centre.
    expected = np.asarray(Image.fromarray(pixels).resize((40, 20), Image.BICUBIC))[:, 10:30]
    assert np.abs(encoded.pixels.astype(int) - expected).max() <= 1

  def test_resize_upscales_small_images_and_keeps_right_sized_jpegs(self, chelsea):
    encoded = images.encode_file(_encode(chelsea[:16, :24], 'JPEG'), resize=32)
    assert encoded.pixels.shape == (32, 32, 3)
    data = _encode(chelsea[:32, :32], 'JPEG')
    assert images.encode_file(data, resize=32).data is data


def test_encode_pixels_is_lossless_png():
  pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  encoded = images.encode_pixels(pixels)
  assert encoded.format == images.PNG
  np.testing.assert_array_equal(_decode(encoded.data), pixels)
  with pytest.raises(ValueError, match='uint8'):
    images.encode_pixels(pixels.astype(np.float32))


class TestExample:

  def test_tensorflow_parses_the_pure_python_encoding(self):
    encoded = bytes(range(256)) * 700  # long enough for a multi-byte length varint
    serialized = example.image_example(encoded, 'jpeg', 256, 300, 999, 'tench, Tinca tinca',
                                       'train/n01440764/x.JPEG')
    expected = tf.train.Example(features=tf.train.Features(feature={
        records.IMAGE_ENCODED: _bytes_feature(encoded),
        records.IMAGE_FORMAT: _bytes_feature(b'jpeg'),
        records.IMAGE_HEIGHT: _int64_feature(256),
        records.IMAGE_WIDTH: _int64_feature(300),
        records.LABEL: _int64_feature(999),
        records.LABEL_TEXT: _bytes_feature('tench, Tinca tinca'.encode()),
        records.FILENAME: _bytes_feature(b'train/n01440764/x.JPEG'),
    }))
    assert tf.train.Example.FromString(serialized) == expected
    assert serialized == expected.SerializeToString(deterministic=True)

  @pytest.mark.parametrize('value', [0, 1, 127, 128, 2**14, 2**31, 2**63 - 1, -1, -2**63])
  def test_int64_values(self, value):
    parsed = tf.train.Example.FromString(example.serialize_example({'v': value}))
    assert parsed.features.feature['v'].int64_list.value == [value]

  def test_rejects_other_types(self):
    with pytest.raises(TypeError, match='bytes or int'):
      example.serialize_example({'v': 1.5})


def _bytes_feature(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


class TestPixelMoments:

  def test_matches_numpy_and_does_not_depend_on_grouping(self):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (12, 9, 7, 3), dtype=np.uint8)
    whole = stats.PixelMoments()
    whole.add_images(list(batch))
    parts = [stats.PixelMoments() for _ in range(3)]
    for i, pixels in enumerate(batch):
      parts[i % 3].add(pixels)
    merged = stats.PixelMoments()
    for part in reversed(parts):
      merged.merge(part)
    flat = batch.reshape(-1, 3).astype(np.float64)
    for moments in (whole, merged):
      color = moments.color_stats()
      np.testing.assert_allclose(color.mean_rgb, flat.mean(axis=0))
      values, vectors = np.linalg.eigh(np.cov(flat, rowvar=False, bias=True))
      np.testing.assert_allclose(color.eigenvalues, values[::-1])
      # Eigenvectors up to sign.
      np.testing.assert_allclose(np.abs(np.array(color.eigenvectors)), np.abs(vectors[:, ::-1]),
                                 atol=1e-9)
      np.testing.assert_allclose(moments.mean_image(), batch.mean(axis=0), rtol=1e-6)
    assert whole.color_stats() == merged.color_stats()
    np.testing.assert_array_equal(whole.mean_image(), merged.mean_image())

  def test_mixed_sizes_have_no_mean_image(self):
    moments = stats.PixelMoments()
    moments.add_images([np.zeros((4, 4, 3), np.uint8), np.full((4, 5, 3), 10, np.uint8)])
    assert moments.mean_image() is None and not moments.uniform
    assert moments.color_stats().mean_rgb == pytest.approx((200 / 36,) * 3)

  def test_round_trips_through_arrays(self):
    moments = stats.PixelMoments()
    moments.add(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    loaded = stats.PixelMoments.from_arrays(moments.to_arrays('m/'), 'm/')
    assert loaded.color_stats() == moments.color_stats()
    np.testing.assert_array_equal(loaded.mean_image(), moments.mean_image())

  def test_empty_has_no_statistics(self):
    assert stats.PixelMoments().color_stats() is None
    assert stats.PixelMoments().mean_image() is None


class TestStratifiedSplit:

  def test_holds_out_the_fraction_of_every_class_deterministically(self):
    labels = [i % 4 for i in range(200)]  # 50 per class
    kept, held_out = split.stratified_split(labels, 0.1, seed=3)
    assert sorted(kept + held_out) == list(range(200))
    assert collections.Counter(labels[i] for i in held_out) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert split.stratified_split(labels, 0.1, seed=3) == (kept, held_out)
    assert split.stratified_split(labels, 0.1, seed=4)[1] != held_out

  def test_keeps_one_training_example_and_handles_zero(self):
    kept, held_out = split.stratified_split([0, 0, 1], 0.9, seed=0)
    assert held_out in ([0], [1]) and 2 in kept and len(kept) == 2
    assert split.stratified_split([0, 1, 1], 0.0, seed=0) == ([0, 1, 2], [])

  @pytest.mark.parametrize('fraction', [-0.1, 1.0])
  def test_rejects_bad_fractions(self, fraction):
    with pytest.raises(ConversionError, match='validation fraction'):
      split.stratified_split([0, 1], fraction, seed=0)
