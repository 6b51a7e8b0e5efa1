"""Fuzz (hypothesis): any sensor_msgs/Image or CompressedImage -> the frame fusion_node fuses.

``nodes.image_msgs.camera_msg_to_frame`` is what the node's subscription callback calls; whatever a
camera sends, it returns a usable frame or raises the project's ``ImageCodecError``, never another
exception (the node counts ImageCodecError and drops the frame). Messages are real rclpy messages.
"""
from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from mex_fusion_ros.codec.image_codec import ENCODINGS, ImageCodecError
from mex_fusion_ros.config import default_parameters
from mex_fusion_ros.nodes.image_msgs import array_to_compressed_msg, array_to_image_msg, camera_msg_to_frame

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_PIXELS = int(default_parameters("fusion_node")["input.max_pixels"])
UINT32 = st.integers(0, 2**32 - 1)
ENCODING_NAMES = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.sampled_from(["bayer_rggb8", "32FC1", "yuv422", ""]),
                           st.text(max_size=12))


def check_frame(frame: np.ndarray) -> None:
    """What the pipeline is promised: grey (H, W) or RGB (H, W, 3), 8 or 16 bit, not empty."""
    assert isinstance(frame, np.ndarray) and frame.size > 0
    assert frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3), frame.shape
    assert frame.dtype in (np.uint8, np.uint16)
    assert frame.shape[0] * frame.shape[1] <= MAX_PIXELS


def to_frame_or_codec_error(msg: Image | CompressedImage) -> np.ndarray | None:
    try:
        frame = camera_msg_to_frame(msg, max_pixels=MAX_PIXELS)
    except ImageCodecError:
        return None
    check_frame(frame)
    return frame


@SETTINGS
@given(height=st.one_of(st.integers(0, 64), UINT32), width=st.one_of(st.integers(0, 64), UINT32),
       encoding=ENCODING_NAMES, is_bigendian=st.integers(0, 255), step=st.one_of(st.integers(0, 512), UINT32),
       data=st.binary(max_size=4096))
def test_arbitrary_image_fields_give_a_frame_or_a_codec_error(height, width, encoding, is_bigendian, step, data):
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step, data=data)
    frame = to_frame_or_codec_error(msg)
    if frame is not None:
        assert frame.shape[:2] == (height, width)


@st.composite
def well_formed_images(draw: st.DrawFn) -> Image:
    """A valid Image of any supported encoding, padded rows and byte order, then one field changed."""
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    info = ENCODINGS[encoding]
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, np.iinfo(info.dtype).max, shape, dtype=info.dtype, endpoint=True)
    padding = draw(st.integers(0, 3)) * info.bytes_per_channel
    msg = array_to_image_msg(pixels, encoding, step=width * info.pixel_bytes + padding,
                             is_bigendian=draw(st.booleans()))
    change = draw(st.sampled_from(["none", "height", "width", "step", "encoding", "data", "is_bigendian"]))
    if change in ("height", "width", "step"):
        setattr(msg, change, draw(UINT32))
    elif change == "encoding":
        msg.encoding = draw(ENCODING_NAMES)
    elif change == "data":
        cut = draw(st.integers(0, len(msg.data)))
        msg.data = bytes(msg.data[:cut]) + draw(st.binary(max_size=8))
    elif change == "is_bigendian":
        msg.is_bigendian = draw(st.integers(0, 255))
    return msg


@SETTINGS
@given(well_formed_images())
def test_valid_images_with_one_field_wrong_give_a_frame_or_a_codec_error(msg):
    frame = to_frame_or_codec_error(msg)
    if frame is not None:
        assert frame.shape[:2] == (msg.height, msg.width)


FORMATS = st.one_of(
    st.sampled_from(["jpeg", "png", "jpg", "rgb8; jpeg compressed bgr8", "mono16; png compressed ",
                     "rgb8; png compressed rgb8", "bgra8; png compressed bgra8", "16UC1; compressedDepth png",
                     "tiff", "", "rgb8;", "jpeg compressed bgr8 extra"]),
    st.text(max_size=30))


@st.composite
def compressed_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "png", "jpeg", "png_corrupted", "jpeg_corrupted", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    codec = "jpeg" if kind.startswith("jpeg") else draw(st.sampled_from(["png", "jpeg"]))
    channels = draw(st.sampled_from([1, 3] if codec == "jpeg" else [1, 3, 4]))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    dtype = np.uint16 if codec == "png" and draw(st.booleans()) else np.uint8
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    ok, data = cv2.imencode(".png" if codec == "png" else ".jpg", pixels)
    assert ok
    data = bytearray(data.tobytes())
    if kind.endswith("corrupted"):
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if kind == "truncated":
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@SETTINGS
@given(fmt=FORMATS, data=compressed_payloads())
def test_arbitrary_compressed_images_give_a_frame_or_a_codec_error(fmt, data):
    to_frame_or_codec_error(CompressedImage(format=fmt, data=data))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8"]), st.sampled_from(["png", "jpeg"]),
       st.integers(1, 30), st.integers(1, 30))
def test_what_a_camera_normally_sends_becomes_the_expected_frame(encoding, codec, height, width):
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    pixels = np.random.default_rng(height * 31 + width).integers(0, np.iinfo(info.dtype).max, shape,
                                                                dtype=info.dtype, endpoint=True)
    raw = camera_msg_to_frame(array_to_image_msg(pixels, encoding), max_pixels=MAX_PIXELS)
    expected = pixels if info.channels == 1 else pixels[:, :, [2, 1, 0] if encoding.startswith("bgr") else [0, 1, 2]]
    np.testing.assert_array_equal(raw, expected)
    if codec == "jpeg" and info.dtype != np.uint8:
        return
    compressed = camera_msg_to_frame(array_to_compressed_msg(pixels, codec, encoding=encoding), max_pixels=MAX_PIXELS)
    assert compressed.shape == expected.shape and compressed.dtype == info.dtype
    if codec == "png":
        np.testing.assert_array_equal(compressed, expected)
