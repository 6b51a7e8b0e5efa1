"""Width and height from a PNG/JPEG header before decoding (ROS-free), and the pixel limit that
keeps a decompression bomb (a few KB stating a huge image) from being decoded at all."""
from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.codec.image_codec import (
    JPEG_SOI,
    PNG_SIGNATURE,
    ImageCodecError,
    ImageTooLargeError,
    compressed_image_size,
    decode_compressed,
    decode_image,
    encode_compressed,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def encoded_images(draw: st.DrawFn) -> tuple[bytes, int, int, str]:
    """A real PNG or JPEG from OpenCV: (file, width, height, codec), grey or colour, 8 or 16 bit."""
    codec = draw(st.sampled_from(["png", "jpeg"]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([1, 3] if codec == "jpeg" else [1, 3, 4]))
    dtype = np.uint16 if codec == "png" and channels == 1 and draw(st.booleans()) else np.uint8
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    extra = ([cv2.IMWRITE_JPEG_PROGRESSIVE, int(draw(st.booleans()))] if codec == "jpeg" else [])
    ok, data = cv2.imencode(".jpg" if codec == "jpeg" else ".png", pixels, extra)
    assert ok
    return data.tobytes(), width, height, codec


@SETTINGS
@given(encoded_images())
def test_header_size_is_the_decoded_size(case):
    data, width, height, codec = case
    assert compressed_image_size(data) == (width, height)
    decoded = decode_compressed(codec, data)
    assert decoded.shape[:2] == (height, width)


@SETTINGS
@given(st.binary(max_size=256))
def test_arbitrary_bytes_give_a_size_or_a_codec_error(data):
    try:
        width, height = compressed_image_size(data)
    except ImageCodecError:
        return
    assert width >= 1 and height >= 1


@SETTINGS
@given(st.sampled_from([PNG_SIGNATURE, JPEG_SOI, JPEG_SOI + b"\xff"]), st.binary(max_size=128))
def test_bytes_after_a_real_signature_give_a_size_or_a_codec_error(signature, tail):
    try:
        width, height = compressed_image_size(signature + tail)
    except ImageCodecError:
        return
    assert 1 <= width < 2**31 and 1 <= height < 2**31


@SETTINGS
@given(encoded_images(), st.data())
def test_truncated_or_corrupted_files_give_the_true_size_or_a_codec_error(case, data):
    encoded, width, height, _ = case
    cut = data.draw(st.integers(0, len(encoded)))
    corrupted = bytearray(encoded[:cut])
    for _ in range(data.draw(st.integers(0, 3))):
        if corrupted:
            corrupted[data.draw(st.integers(0, len(corrupted) - 1))] = data.draw(st.integers(0, 255))
    try:
        size = compressed_image_size(bytes(corrupted))
    except ImageCodecError:
        return
    if bytes(corrupted) == encoded[:cut]:  # untouched prefix: what it states is the real size
        assert size == (width, height)


@SETTINGS
@given(encoded_images(), st.integers(1, 2000))
def test_decode_refuses_exactly_the_images_over_max_pixels(case, max_pixels):
    data, width, height, codec = case
    if width * height > max_pixels:
        with pytest.raises(ImageTooLargeError, match="over the limit"):
            decode_compressed(codec, data, max_pixels=max_pixels)
    else:
        assert decode_compressed(codec, data, max_pixels=max_pixels).shape[:2] == (height, width)


def png_with_stated_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR then claims ``width`` x ``height`` (CRC fixed up)."""
    ok, data = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    assert ok
    raw = bytearray(data.tobytes())
    ihdr = bytes(raw[12:16]) + struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(raw)


def test_the_issue_bomb_is_refused_in_microseconds_without_decoding():
    ok, bomb = cv2.imencode(".png", np.zeros((4096, 4096), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and bomb.size < 20_000  # 16 KB that decode to 16.7 Mpixel
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="4096x4096"):
        decode_compressed("png", bomb, max_pixels=4096 * 2160)
    assert time.perf_counter() - started < 0.05  # decoding takes seconds and ~500 MB
    # A header that lies about its size is refused just the same: the limit is checked first.
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_compressed("png", png_with_stated_size(100_000, 100_000), max_pixels=4096 * 2160)


def test_jpeg_header_walks_past_app_segments_and_fill_bytes():
    ok, data = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))
    assert ok
    data = data.tobytes()
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 1000) + bytes(1000)  # a large APP1 before the frame header
    padded = JPEG_SOI + exif + b"\xff\xff" + data[2:]  # fill bytes before the next marker
    assert compressed_image_size(padded) == (50, 30)
    assert decode_compressed("jpeg", padded).shape == (30, 50, 3)


def test_other_image_formats_are_refused_even_where_opencv_could_decode_them():
    ok, bmp = cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))
    assert ok
    with pytest.raises(ImageCodecError, match="neither PNG nor JPEG"):
        decode_compressed("jpeg", bmp.tobytes())


def test_raw_images_are_checked_against_max_pixels_from_their_fields():
    data = bytes(640 * 512 * 3)
    assert decode_image(512, 640, "rgb8", 0, 640 * 3, data, max_pixels=640 * 512).shape == (512, 640, 3)
    with pytest.raises(ImageTooLargeError, match="640x512"):
        decode_image(512, 640, "rgb8", 0, 640 * 3, data, max_pixels=640 * 512 - 1)
    # The size is refused before the data is even looked at (here it would not match).
    with pytest.raises(ImageTooLargeError):
        decode_image(100_000, 100_000, "mono8", 0, 100_000, b"", max_pixels=4096 * 2160)


def test_encoded_frames_of_the_project_pass_the_default_limit():
    for array, fmt in [(np.zeros((2160, 4096, 3), np.uint8), "jpeg"), (np.zeros((512, 640), np.uint16), "png")]:
        raw = encode_compressed(array, fmt)
        assert decode_compressed(raw.format, raw.data, max_pixels=4096 * 2160).shape == array.shape
