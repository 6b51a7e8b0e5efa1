"""sensor_msgs/Image and CompressedImage <-> numpy: a thin rclpy adapter over ``codec.image_codec``.

All layout rules, validation and errors (``ImageCodecError``) live in the ROS-free codec; this
module only moves fields in and out of the rclpy message classes, avoiding per-byte Python work:

- reading: ``msg.data`` is an ``array.array('B')``, which numpy wraps without copying;
- writing: the generated ``data`` setter copies an ``array.array('B')`` or ``bytes`` with one
  memcpy, but iterates element by element over anything else (a ``memoryview`` of a 640x512 rgb8
  frame takes ~100 ms instead of ~0.02 ms), and with ``ROS_PYTHON_CHECK_FIELDS=1`` it also checks
  every byte of a ``bytes`` value. An ``array.array('B')`` is the fast path in both modes.
"""
from __future__ import annotations

import array as pyarray

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mex_fusion_ros.codec.image_codec import (
    ImageCodecError,
    decode_compressed,
    decode_image,
    encode_compressed,
    pack_image,
    to_float01,
    to_rgb,
)

__all__ = [
    "array_to_compressed_msg",
    "array_to_image_msg",
    "camera_msg_to_frame",
    "compressed_msg_to_array",
    "image_msg_to_array",
    "image_msg_to_float01",
]


def _byte_array(data: bytes | np.ndarray) -> pyarray.array:
    buffer = pyarray.array("B")
    buffer.frombytes(data)  # one memcpy from any contiguous buffer
    return buffer


def image_msg_to_array(msg: Image, *, copy: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """An Image message -> ``(H, W)`` or ``(H, W, C)`` uint8/uint16, channels as the encoding stores them.

    ``copy=False`` returns a read-only view of ``msg.data`` where possible (see ``decode_image``).
    Raises ``ImageCodecError`` for a malformed message (``ImageTooLargeError`` above ``max_pixels``).
    """
    return decode_image(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data, copy=copy,
                        max_pixels=max_pixels)


def image_msg_to_float01(msg: Image) -> np.ndarray:
    """An Image message -> float32 in [0, 1]: ``(H, W)`` grey or ``(H, W, 3)`` RGB (BGR/alpha converted)."""
    return to_float01(image_msg_to_array(msg, copy=False), msg.encoding)


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header | None = None, *,
                       step: int | None = None, is_bigendian: bool = False) -> Image:
    """An array laid out as ``encoding`` requires (see ``encode_image``) -> a new Image message.

    ``header`` is referenced, not copied (a fresh empty Header when ``None``).
    """
    # pack_image skips encode_image's bytes copy: the array.array below is the one copy we need.
    raw = pack_image(array, encoding, step=step, is_bigendian=is_bigendian)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = raw.height
    msg.width = raw.width
    msg.encoding = raw.encoding
    msg.is_bigendian = int(raw.is_bigendian)
    msg.step = raw.step
    msg.data = _byte_array(raw.data)
    return msg


def compressed_msg_to_array(msg: CompressedImage, *, max_pixels: int | None = None) -> np.ndarray:
    """A CompressedImage (jpeg/png) -> ``(H, W)`` grey or ``(H, W, 3|4)`` RGB(A) (``decode_compressed``).

    The size in the file's header is checked against ``max_pixels`` before anything is decoded.
    """
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)


def camera_msg_to_frame(msg: Image | CompressedImage, *, max_pixels: int | None = None) -> np.ndarray:
    """A camera's Image or CompressedImage -> the frame the fusion pipeline takes.

    Grey stays ``(H, W)`` (uint8/uint16, as sent); colour becomes ``(H, W, 3)`` in RGB order with
    any alpha dropped. A raw image is a read-only view of ``msg.data`` where the layout allows
    (the pipeline never writes into its input). Any unusable message raises ``ImageCodecError``
    (``ImageTooLargeError`` above ``max_pixels``), and nothing else.
    """
    if isinstance(msg, CompressedImage):
        image = compressed_msg_to_array(msg, max_pixels=max_pixels)  # RGB(A) order already
        if image.ndim == 3:
            image = image[:, :, :3]
    else:
        image = image_msg_to_array(msg, copy=False, max_pixels=max_pixels)
        if image.ndim == 3:
            image = to_rgb(image, msg.encoding)  # bgr8, rgba8, ... -> RGB order
    if image.size == 0:
        raise ImageCodecError(f"zero-size image {image.shape}")
    return image


def array_to_compressed_msg(array: np.ndarray, fmt: str = "jpeg", header: Header | None = None, *,
                            encoding: str | None = None, jpeg_quality: int = 90,
                            png_level: int = 3) -> CompressedImage:
    """An array -> a new CompressedImage with image_transport's ``format`` (see ``encode_compressed``)."""
    raw = encode_compressed(array, fmt, encoding=encoding, jpeg_quality=jpeg_quality, png_level=png_level)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = raw.format
    msg.data = _byte_array(raw.data)
    return msg
