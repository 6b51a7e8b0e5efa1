"""The ROS-free image codec: raw and compressed round trips, layout details, and malformed input."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mex_fusion_ros.codec.image_codec import (
    ENCODINGS,
    CompressedFormat,
    ImageCodecError,
    RawImage,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
    infer_encoding,
    parse_compressed_format,
    to_float01,
    to_rgb,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXPECTED_LAYOUT = {  # encoding: (channels, dtype), from sensor_msgs/image_encodings.hpp
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8), "bgra8": (4, np.uint8),
}


def shape_of(encoding: str, height: int, width: int) -> tuple[int, ...]:
    channels = ENCODINGS[encoding].channels
    return (height, width) if channels == 1 else (height, width, channels)


ALL_ENCODINGS = st.sampled_from(sorted(ENCODINGS))


@st.composite
def images(draw: st.DrawFn, encodings: st.SearchStrategy[str] = ALL_ENCODINGS):
    """(array, encoding, step, is_bigendian) with random size, content, row padding and byte order."""
    encoding = draw(encodings)
    info = ENCODINGS[encoding]
    height = draw(st.integers(1, 7))
    width = draw(st.integers(1, 7))
    pixels = draw(hnp.arrays(info.dtype, shape_of(encoding, height, width)))
    padding = draw(st.integers(0, 5)) * info.bytes_per_channel
    step = width * info.pixel_bytes + padding
    return pixels, encoding, step, draw(st.booleans())


def decode_raw(raw: RawImage, **kwargs) -> np.ndarray:
    return decode_image(raw.height, raw.width, raw.encoding, raw.is_bigendian, raw.step, raw.data, **kwargs)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def test_encoding_table_matches_ros_definitions():
    assert {name: (info.channels, info.dtype) for name, info in ENCODINGS.items()} == {
        name: (channels, np.dtype(dtype)) for name, (channels, dtype) in EXPECTED_LAYOUT.items()}


@SETTINGS
@given(images())
def test_encode_decode_round_trip_is_bit_exact(case):
    pixels, encoding, step, big = case
    raw = encode_image(pixels, encoding, step=step, is_bigendian=big)
    assert (raw.height, raw.width, raw.encoding, raw.step, raw.is_bigendian) == (
        pixels.shape[0], pixels.shape[1], encoding, step, big)
    assert isinstance(raw.data, bytes) and len(raw.data) == step * raw.height
    decoded = decode_raw(raw)
    assert decoded.dtype == ENCODINGS[encoding].dtype and decoded.dtype.isnative
    assert decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)
    # padding bytes are zero, so the message is deterministic
    row_bytes = pixels.shape[1] * ENCODINGS[encoding].pixel_bytes
    rows = np.frombuffer(raw.data, np.uint8).reshape(raw.height, step)
    assert not rows[:, row_bytes:].any()


@SETTINGS
@given(images(), st.sampled_from(["bytes", "bytearray", "memoryview", "array", "ndarray", "list"]))
def test_every_buffer_type_of_data_decodes_the_same(case, kind):
    pixels, encoding, step, big = case
    raw = encode_image(pixels, encoding, step=step, is_bigendian=big)
    data = {"bytes": raw.data, "bytearray": bytearray(raw.data), "memoryview": memoryview(raw.data),
            "array": array.array("B", raw.data), "ndarray": np.frombuffer(raw.data, np.uint8),
            "list": list(raw.data)}[kind]
    np.testing.assert_array_equal(decode_image(raw.height, raw.width, encoding, big, step, data), pixels)


def test_big_endian_mono16_decodes_on_this_host():
    # Built byte by byte, independently of the encoder: 0x0102, 0xA0B0 / 0xFFFF, 0x0001, padded to 6 bytes.
    data = bytes([0x01, 0x02, 0xA0, 0xB0, 0xEE, 0xEE, 0xFF, 0xFF, 0x00, 0x01, 0xEE, 0xEE])
    decoded = decode_image(2, 2, "mono16", 1, 6, data)
    np.testing.assert_array_equal(decoded, np.array([[0x0102, 0xA0B0], [0xFFFF, 0x0001]], np.uint16))
    assert decoded.dtype == np.dtype(np.uint16) and decoded.dtype.isnative
    little = decode_image(2, 2, "16UC1", 0, 6, data)
    np.testing.assert_array_equal(little, np.array([[0x0201, 0xB0A0], [0xFFFF, 0x0100]], np.uint16))
    assert encode_image(decoded, "mono16", step=6, is_bigendian=True).data == data.replace(b"\xee", b"\x00")


def test_channels_are_returned_as_stored():
    data = bytes([10, 20, 30, 40, 50, 60])
    np.testing.assert_array_equal(decode_image(1, 2, "bgr8", 0, 6, data), [[[10, 20, 30], [40, 50, 60]]])
    np.testing.assert_array_equal(decode_image(1, 2, "rgb8", 0, 6, data), [[[10, 20, 30], [40, 50, 60]]])


def test_decoded_arrays_do_not_alias_the_message_buffer():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    buffer = bytearray(encode_image(pixels, "mono8").data)
    owned = decode_image(3, 4, "mono8", 0, 4, buffer)
    assert owned.flags.writeable and owned.flags.c_contiguous
    view = decode_image(3, 4, "mono8", 0, 4, buffer, copy=False)
    assert not view.flags.writeable
    buffer[0] = 99
    assert owned[0, 0] == 0  # the copy is independent of later changes to the message
    assert view[0, 0] == 99  # the documented zero-copy view follows the buffer
    with pytest.raises(ValueError):
        view[0, 0] = 1


@SETTINGS
@given(images())
def test_zero_copy_decode_equals_copying_decode(case):
    pixels, encoding, step, big = case
    raw = encode_image(pixels, encoding, step=step, is_bigendian=big)
    np.testing.assert_array_equal(decode_raw(raw, copy=False), decode_raw(raw))


# ---------------------------------------------------------------------------------------------
# Malformed raw images
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(images(), st.integers(-40, 40).filter(lambda delta: delta != 0))
def test_wrong_data_length_always_raises(case, delta):
    pixels, encoding, step, big = case
    raw = encode_image(pixels, encoding, step=step, is_bigendian=big)
    data = raw.data[:delta] if delta < 0 else raw.data + bytes(delta)
    with pytest.raises(ImageCodecError, match="bytes but step x height"):
        decode_image(raw.height, raw.width, encoding, big, step, data)


@SETTINGS
@given(images(), st.data())
def test_step_smaller_than_a_row_raises(case, data):
    pixels, encoding, _, big = case
    row_bytes = pixels.shape[1] * ENCODINGS[encoding].pixel_bytes
    step = data.draw(st.integers(1, row_bytes - 1)) if row_bytes > 1 else 0
    with pytest.raises(ImageCodecError):
        decode_image(pixels.shape[0], pixels.shape[1], encoding, big, step, bytes(step * pixels.shape[0]))
    with pytest.raises(ImageCodecError):
        encode_image(pixels, encoding, step=step)


@SETTINGS
@given(images(st.sampled_from(["mono16", "16UC1"])), st.integers(0, 6))
def test_odd_step_for_16_bit_raises(case, extra):
    pixels, encoding, _, big = case
    step = pixels.shape[1] * 2 + 2 * extra + 1
    with pytest.raises(ImageCodecError, match="multiple"):
        decode_image(pixels.shape[0], pixels.shape[1], encoding, big, step, bytes(step * pixels.shape[0]))
    with pytest.raises(ImageCodecError, match="multiple"):
        encode_image(pixels, encoding, step=step)


@pytest.mark.parametrize("encoding", ["RGB8", "rgb", "mono 8", "32FC1", "yuv422", "", "bgr8 ", None, 8])
def test_unknown_encoding_raises(encoding):
    with pytest.raises(ImageCodecError, match="encoding"):
        decode_image(1, 1, encoding, 0, 4, bytes(4))
    with pytest.raises(ImageCodecError, match="encoding"):
        encode_image(np.zeros((1, 1), np.uint8), encoding)


@pytest.mark.parametrize("field,value", [
    ("height", 0), ("width", 0), ("height", -1), ("width", -3), ("step", 0), ("step", -6),
    ("height", 1.0), ("width", "2"), ("step", None), ("height", True), ("is_bigendian", 2.5),
    ("is_bigendian", -1), ("is_bigendian", 256),
])
def test_invalid_fields_raise(field, value):
    fields = {"height": 1, "width": 2, "encoding": "rgb8", "is_bigendian": 0, "step": 6, "data": bytes(6)}
    decode_image(**fields)  # the unmodified fields are valid
    fields[field] = value
    with pytest.raises(ImageCodecError, match=field):
        decode_image(**fields)


@pytest.mark.parametrize("data", [
    np.zeros(6, np.uint16), np.zeros((2, 3), np.uint8), array.array("H", [0] * 3),
    [0, 1, 256, 0, 0, 0], [0.5] * 6, "abcdef", None, {1, 2},
])
def test_invalid_data_buffers_raise(data):
    with pytest.raises(ImageCodecError, match="data"):
        decode_image(1, 2, "rgb8", 0, 6, data)


SENSIBLE_ENCODINGS = [*sorted(ENCODINGS), "RGB8", "32FC1", "", "mono"]


@settings(max_examples=400, deadline=None)
@given(st.integers(-2, 6), st.integers(-2, 6), st.sampled_from(SENSIBLE_ENCODINGS),
       st.sampled_from([0, 1, True, False, 2, -1]), st.integers(-2, 40), st.data())
def test_arbitrary_fields_either_decode_consistently_or_raise_codec_error(height, width, encoding, big, step,
                                                                          draw):
    # Half the time the length fits step x height, so the consistency checks below are exercised too.
    fits = step * height if step > 0 and height > 0 else 0
    data = draw.draw(st.one_of(st.binary(min_size=fits, max_size=fits), st.binary(max_size=200)))
    try:
        decoded = decode_image(height, width, encoding, big, step, data)
    except ImageCodecError:
        return
    # Anything that decodes is fully consistent with its fields: never a silently reshaped image.
    info = ENCODINGS[encoding]
    assert len(data) == step * height and step >= width * info.pixel_bytes
    assert decoded.shape == shape_of(encoding, height, width) and decoded.dtype == info.dtype
    row_bytes = width * info.pixel_bytes
    rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row_bytes]
    stored = rows.copy().view(info.dtype.newbyteorder(">" if big else "<"))
    np.testing.assert_array_equal(decoded.reshape(height, -1), stored)


@pytest.mark.parametrize("encoding,pixels", [
    ("mono8", np.zeros((2, 2, 1), np.uint8)),      # a trailing channel axis is not silently dropped
    ("mono8", np.zeros((2, 2), np.uint16)),
    ("mono16", np.zeros((2, 2), np.uint8)),
    ("mono16", np.zeros((2, 2), np.int16)),
    ("rgb8", np.zeros((2, 2), np.uint8)),
    ("rgb8", np.zeros((2, 2, 4), np.uint8)),
    ("bgra8", np.zeros((2, 2, 3), np.uint8)),
    ("rgb8", np.zeros((2, 2, 3), np.float32)),
    ("rgb8", np.zeros((0, 2, 3), np.uint8)),
    ("mono8", np.zeros((3, 0), np.uint8)),
    ("mono8", [[0, 1], [2, 3]]),
])
def test_encode_rejects_arrays_that_do_not_match_the_encoding(encoding, pixels):
    with pytest.raises(ImageCodecError):
        encode_image(pixels, encoding)


def test_encode_accepts_non_native_and_non_contiguous_arrays():
    pixels = np.arange(24, dtype=">u2").reshape(4, 6)[:, ::2]
    raw = encode_image(pixels, "16UC1")
    np.testing.assert_array_equal(decode_raw(raw), pixels.astype(np.uint16))


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------
def test_to_rgb_and_to_float01_follow_the_encoding():
    bgr = np.array([[[10, 20, 30]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(bgr, "bgr8"), [[[30, 20, 10]]])
    np.testing.assert_array_equal(to_rgb(bgr, "rgb8"), bgr)
    np.testing.assert_array_equal(to_rgb(np.array([[[1, 2, 3, 4]]], np.uint8), "bgra8"), [[[3, 2, 1]]])
    np.testing.assert_array_equal(to_rgb(np.array([[[1, 2, 3, 4]]], np.uint8), "rgba8"), [[[1, 2, 3]]])
    np.testing.assert_array_equal(to_rgb(np.array([[7]], np.uint16), "mono16"), [[[7, 7, 7]]])
    unit = to_float01(bgr, "bgr8")
    assert unit.dtype == np.float32 and unit.shape == (1, 1, 3)
    np.testing.assert_allclose(unit, [[[30 / 255, 20 / 255, 10 / 255]]], rtol=1e-6)
    grey = to_float01(np.array([[0, 65535]], np.uint16), "16UC1")
    assert grey.dtype == np.float32 and grey.shape == (1, 2)
    np.testing.assert_array_equal(grey, [[0.0, 1.0]])
    with pytest.raises(ImageCodecError):
        to_rgb(bgr, "mono8")


@SETTINGS
@given(images())
def test_to_float01_is_in_unit_range_with_project_shapes(case):
    pixels, encoding, _, _ = case
    unit = to_float01(pixels, encoding)
    assert unit.dtype == np.float32 and unit.min() >= 0.0 and unit.max() <= 1.0
    assert unit.shape == (pixels.shape[:2] if ENCODINGS[encoding].channels == 1 else (*pixels.shape[:2], 3))


def test_infer_encoding():
    assert infer_encoding(np.zeros((2, 2), np.uint8)) == "mono8"
    assert infer_encoding(np.zeros((2, 2), np.uint16)) == "mono16"
    assert infer_encoding(np.zeros((2, 2, 3), np.uint8)) == "rgb8"
    assert infer_encoding(np.zeros((2, 2, 4), np.uint8)) == "rgba8"
    with pytest.raises(ImageCodecError):
        infer_encoding(np.zeros((2, 2, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Compressed images
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("jpeg", CompressedFormat("jpeg")),
    ("JPG", CompressedFormat("jpeg")),
    (" png ", CompressedFormat("png")),
    ("rgb8; jpeg compressed bgr8", CompressedFormat("jpeg", "rgb8", "bgr8")),
    ("mono8; jpeg compressed ", CompressedFormat("jpeg", "mono8", None)),
    ("bgra8; png compressed rgb8", CompressedFormat("png", "bgra8", "rgb8")),
])
def test_parse_compressed_format(text, expected):
    assert parse_compressed_format(text) == expected


@pytest.mark.parametrize("text", [
    "", "tiff", "rgb8;", "16UC1; compressedDepth png", "rgb8; jpeg squashed bgr8",
    "rgb8; jpeg compressed bgr8 extra", None,
])
def test_unsupported_compressed_formats_raise(text):
    with pytest.raises(ImageCodecError):
        parse_compressed_format(text)


def smooth_image(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """A low-frequency image (what JPEG is made for), uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(3, 3, channels)).astype(np.float32)
    fine = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(fine, 0, 255).astype(np.uint8).reshape(height, width, channels).squeeze()


@SETTINGS
@given(images(st.sampled_from(["mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8"])))
def test_png_round_trip_is_exact(case):
    pixels, encoding, _, _ = case
    compressed = encode_compressed(pixels, "png", encoding=encoding)
    assert compressed.format.startswith(f"{encoding}; png compressed")
    decoded = decode_compressed(compressed.format, compressed.data)
    # Colour comes back RGB (alpha dropped, as image_transport does); grey as grey of its own dtype.
    expected = pixels if ENCODINGS[encoding].channels == 1 else to_rgb(pixels, encoding)
    assert decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("encoding", ["mono8", "rgb8", "bgr8", "rgba8"])
def test_jpeg_round_trip_is_close(encoding):
    channels = ENCODINGS[encoding].channels
    pixels = smooth_image(48, 64, channels, seed=channels)
    compressed = encode_compressed(pixels, "jpeg", encoding=encoding, jpeg_quality=95)
    assert compressed.format == f"{encoding}; jpeg compressed " + ("bgr8" if channels > 1 else "")
    assert compressed.data[:2] == b"\xff\xd8"  # a real JPEG stream
    decoded = decode_compressed(compressed.format, compressed.data)
    expected = pixels if channels == 1 else to_rgb(pixels, encoding)
    assert decoded.shape == expected.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 2.0


def test_bare_format_and_rgb_stored_order():
    rgb = smooth_image(8, 10, 3, seed=5)
    ok, bgr_file = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    np.testing.assert_array_equal(decode_compressed("png", bgr_file.tobytes()), rgb)
    # A publisher that handed RGB memory to the encoder says so; the decoder must not swap again.
    ok, rgb_file = cv2.imencode(".png", rgb)
    np.testing.assert_array_equal(decode_compressed("rgb8; png compressed rgb8", rgb_file.tobytes()), rgb)


def test_jpeg_cannot_hold_16_bit():
    with pytest.raises(ImageCodecError, match="png"):
        encode_compressed(np.zeros((2, 2), np.uint16), "jpeg")
    with pytest.raises(ImageCodecError):
        encode_compressed(np.zeros((2, 2), np.uint8), "webp")


@SETTINGS
@given(st.sampled_from(["jpeg", "png"]), st.data())
def test_truncated_compressed_data_raises(codec, data):
    compressed = encode_compressed(smooth_image(12, 16, 3, seed=1), codec)
    cut = data.draw(st.integers(0, len(compressed.data) - 1))
    with pytest.raises(ImageCodecError):
        decode_compressed(compressed.format, compressed.data[:cut])


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8"]))
def test_garbage_compressed_data_raises(garbage, fmt):
    with pytest.raises(ImageCodecError):
        decode_compressed(fmt, garbage)


@SETTINGS
@given(st.data())
def test_corrupted_png_never_decodes_to_a_wrong_image(data):
    # PNG chunks carry CRCs: a flipped byte is either detected or lands in bytes that do not affect pixels.
    # (JPEG has no checksum over its entropy-coded data, so only truncation/garbage are testable there.)
    pixels = smooth_image(12, 16, 3, seed=2)
    compressed = encode_compressed(pixels, "png", encoding="rgb8")
    corrupted = bytearray(compressed.data)
    index = data.draw(st.integers(0, len(corrupted) - 1))
    corrupted[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_compressed(compressed.format, bytes(corrupted))
    except ImageCodecError:
        return
    np.testing.assert_array_equal(decoded, pixels)


# ---------------------------------------------------------------------------------------------
# Real images
# ---------------------------------------------------------------------------------------------
def test_real_roadscene_frames_round_trip(roadscene):
    vi_path = sorted((roadscene / "val" / "vi").glob("*.jpg"))[0]
    ir_path = sorted((roadscene / "val" / "ir").glob("*.jpg"))[0]
    bgr = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    assert bgr is not None and ir is not None, "unreadable RoadScene sample"
    raw = encode_image(bgr, "bgr8", step=bgr.shape[1] * 3 + 7)
    np.testing.assert_array_equal(to_rgb(decode_raw(raw), "bgr8"), bgr[:, :, ::-1])
    thermal16 = ir.astype(np.uint16) * 257
    raw16 = encode_image(thermal16, "mono16", is_bigendian=True)
    np.testing.assert_array_equal(decode_raw(raw16), thermal16)
    compressed = encode_compressed(bgr, "png", encoding="bgr8")
    np.testing.assert_array_equal(decode_compressed(compressed.format, compressed.data), bgr[:, :, ::-1])
