"""sensor_msgs/Image and sensor_msgs/CompressedImage fields <-> numpy arrays, without ROS.

Raw images (``decode_image`` / ``encode_image``) support these encodings (REP-104 / the
``sensor_msgs/image_encodings.hpp`` names):

============  ========  ======  ===============  ==========================
encoding      channels  dtype   channel order    decoded shape
============  ========  ======  ===============  ==========================
``mono8``     1         uint8   grey             ``(H, W)``
``8UC1``      1         uint8   grey             ``(H, W)``
``mono16``    1         uint16  grey             ``(H, W)``
``16UC1``     1         uint16  grey             ``(H, W)``
``rgb8``      3         uint8   R, G, B          ``(H, W, 3)``
``bgr8``      3         uint8   B, G, R          ``(H, W, 3)``
``rgba8``     4         uint8   R, G, B, A       ``(H, W, 4)``
``bgra8``     4         uint8   B, G, R, A       ``(H, W, 4)``
============  ========  ======  ===============  ==========================

``decode_image`` returns the channels exactly as stored (a ``bgr8`` image decodes to BGR order);
``to_rgb`` and ``to_float01`` convert to the project's conventions (RGB, float32 in [0, 1]).
Rows may be padded (``step`` > width x pixel bytes) and 16-bit data may be big-endian
(``is_bigendian`` = 1); decoded arrays are always in native byte order.

Compressed images (``decode_compressed`` / ``encode_compressed``) are JPEG or PNG, decoded and
encoded by OpenCV. The ``format`` field is either the bare codec name (``"jpeg"``, ``"png"``) or
image_transport's ``"<encoding>; <codec> compressed <stored order>"`` form (``"rgb8; jpeg
compressed bgr8"``). A JPEG/PNG file defines its own colour order, so compressed colour images
always decode to RGB (``(H, W, 3)``, or ``(H, W, 4)`` RGBA for a PNG with alpha); grey stays ``(H, W)``.

Every malformed input (unknown encoding, wrong sizes, data length != step x height, step too
small or misaligned, wrong array dtype/shape, undecodable bytes) raises ``ImageCodecError``
(a ``ValueError``) naming the reason. Nothing is reshaped or truncated silently.

Size limit: a few kilobytes of PNG or JPEG can decode to gigabytes (a 16 KB PNG of 4096 x 4096
costs ~500 MB and seconds), so ``decode_compressed`` reads the width and height from the file's
header first (``compressed_image_size``) and, with ``max_pixels``, refuses a larger image before
any pixel is decoded (``ImageTooLargeError``); ``decode_image`` checks the raw fields the same way.
"""
from __future__ import annotations

import array as pyarray
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np


class ImageCodecError(ValueError):
    """An image message (or an array to encode) is malformed; the message says why."""


class ImageTooLargeError(ImageCodecError):
    """An image has more pixels than the caller's ``max_pixels``; refused before decoding."""


@dataclass(frozen=True)
class EncodingInfo:
    """Memory layout of one raw image encoding."""

    name: str
    channels: int
    dtype: np.dtype
    channel_order: str  # "L" (grey), "RGB", "BGR", "RGBA" or "BGRA"

    @property
    def bytes_per_channel(self) -> int:
        return self.dtype.itemsize

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.dtype.itemsize

    @property
    def is_colour(self) -> bool:
        return self.channels > 1


def _info(name: str, channels: int, dtype: type, order: str) -> EncodingInfo:
    return EncodingInfo(name, channels, np.dtype(dtype), order)


ENCODINGS: Mapping[str, EncodingInfo] = MappingProxyType({
    info.name: info for info in (
        _info("mono8", 1, np.uint8, "L"),
        _info("8UC1", 1, np.uint8, "L"),
        _info("mono16", 1, np.uint16, "L"),
        _info("16UC1", 1, np.uint16, "L"),
        _info("rgb8", 3, np.uint8, "RGB"),
        _info("bgr8", 3, np.uint8, "BGR"),
        _info("rgba8", 4, np.uint8, "RGBA"),
        _info("bgra8", 4, np.uint8, "BGRA"),
    )
})

COMPRESSED_CODECS = ("jpeg", "png")
_CODEC_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_CV_EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}


@dataclass(frozen=True)
class RawImage:
    """The sensor_msgs/Image fields of one encoded image (``data`` has exactly ``step * height`` bytes)."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


@dataclass(frozen=True)
class RawCompressedImage:
    """The sensor_msgs/CompressedImage fields of one encoded image."""

    format: str
    data: bytes


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed CompressedImage ``format`` string.

    ``codec`` is ``"jpeg"`` or ``"png"``; ``source_encoding`` is the raw encoding before compression
    (``None`` for a bare ``"jpeg"``); ``stored_order`` is the order the compressor was given
    (image_transport writes ``"bgr8"``; ``None`` when not stated, which means the file's own order).
    """

    codec: str
    source_encoding: str | None = None
    stored_order: str | None = None


# ---------------------------------------------------------------------------------------------
# Field validation
# ---------------------------------------------------------------------------------------------
def encoding_info(encoding: Any) -> EncodingInfo:
    """The layout of ``encoding``; ``ImageCodecError`` for anything not in ``ENCODINGS``."""
    if not isinstance(encoding, str):
        raise ImageCodecError(f"encoding must be a string, got {type(encoding).__name__}")
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageCodecError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return info


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but height=True is a bug, not a size.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageCodecError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ImageCodecError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_bigendian(value: Any) -> bool:
    # The message field is a uint8 flag; ROS treats any non-zero value as big-endian.
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and 0 <= int(value) <= 255:
        return bool(value)
    raise ImageCodecError(f"is_bigendian must be a bool or a uint8 flag, got {value!r}")


def _check_step(step: int, width: int, info: EncodingInfo) -> None:
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise ImageCodecError(f"step {step} is smaller than one row of {width} {info.name} pixels "
                              f"({row_bytes} bytes)")
    # OpenCV (and so cv_bridge) refuses rows that do not start on a channel-element boundary.
    if step % info.bytes_per_channel:
        raise ImageCodecError(f"step {step} is not a multiple of the {info.bytes_per_channel}-byte "
                              f"channel size of {info.name}")


def _as_byte_array(data: Any) -> np.ndarray:
    """``data`` (bytes, bytearray, memoryview, array.array('B'), uint8 ndarray, int sequence) as a
    1-D uint8 array; zero-copy for buffers, so the result may alias (and may be read-only)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ImageCodecError(f"data must be a 1-D uint8 array, got {data.dtype} shape {data.shape}")
        return data
    if isinstance(data, pyarray.array):
        if data.typecode != "B":
            raise ImageCodecError(f"data array.array must have typecode 'B', got {data.typecode!r}")
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        if view.itemsize != 1 or not view.c_contiguous:
            raise ImageCodecError("data buffer must be contiguous bytes")
        return np.frombuffer(view.cast("B") if view.ndim != 1 or view.format != "B" else view, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            values = np.asarray(data)
        except (ValueError, TypeError) as error:
            raise ImageCodecError(f"data sequence is not a list of integers: {error}") from None
        if values.size == 0:
            return np.zeros(0, dtype=np.uint8)
        if values.ndim != 1 or values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
            raise ImageCodecError("data sequence must hold integers in [0, 255]")
        return values.astype(np.uint8)
    raise ImageCodecError(f"data must be a bytes-like buffer or uint8 array, got {type(data).__name__}")


# ---------------------------------------------------------------------------------------------
# Raw images
# ---------------------------------------------------------------------------------------------
def check_pixel_count(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """``ImageTooLargeError`` when ``width x height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(f"{what} of {width}x{height} = {width * height} pixels is over the limit of "
                                 f"{max_pixels} pixels")


def decode_image(height: int, width: int, encoding: str, is_bigendian: bool | int, step: int, data: Any,
                 *, copy: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image fields -> array, channels as stored (see the module table).

    Returns ``(H, W)`` for one channel, ``(H, W, C)`` otherwise, dtype uint8/uint16 in native byte
    order. With ``copy=True`` (default) the result is a new, writable array that shares nothing with
    ``data``. With ``copy=False`` it is a *read-only* view of ``data`` whenever no byte swap is needed
    (padded rows give a strided view); it changes if the message buffer is modified later.
    Raises ``ImageCodecError`` for any inconsistency between the fields and ``data``, and
    ``ImageTooLargeError`` when ``width x height`` exceeds ``max_pixels``.
    """
    info = encoding_info(encoding)
    height = _check_int("height", height, 1)
    width = _check_int("width", width, 1)
    check_pixel_count(width, height, max_pixels, f"{info.name} image")
    step = _check_int("step", step, 1)
    big = _check_bigendian(is_bigendian)
    _check_step(step, width, info)
    buffer = _as_byte_array(data)
    if buffer.size != step * height:
        raise ImageCodecError(f"data has {buffer.size} bytes but step x height = {step} x {height} = "
                              f"{step * height} ({info.name} {width}x{height})")
    row_bytes = width * info.pixel_bytes
    stored = info.dtype.newbyteorder(">" if big else "<")
    rows = buffer.reshape(height, step)[:, :row_bytes]  # a view; padding bytes are dropped
    pixels = rows.view(stored)  # the last axis is contiguous, so the element size can change in place
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    pixels = pixels.reshape(shape)
    if not stored.isnative:
        return pixels.astype(info.dtype)  # byte swap: always a fresh native array
    if copy:
        return np.array(pixels, dtype=info.dtype, order="C", copy=True)
    pixels = pixels.view()
    pixels.flags.writeable = False
    return pixels


def _check_array(array: Any, info: EncodingInfo) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ImageCodecError(f"expected a numpy array for {info.name}, got {type(array).__name__}")
    expected_ndim = 2 if info.channels == 1 else 3
    if array.ndim != expected_ndim or (expected_ndim == 3 and array.shape[2] != info.channels):
        wanted = "(H, W)" if info.channels == 1 else f"(H, W, {info.channels})"
        raise ImageCodecError(f"{info.name} needs an array of shape {wanted}, got {array.shape}")
    if array.dtype.kind != info.dtype.kind or array.dtype.itemsize != info.dtype.itemsize:
        raise ImageCodecError(f"{info.name} needs dtype {info.dtype}, got {array.dtype}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageCodecError(f"{info.name} image must not be empty, got shape {array.shape}")
    return array


@dataclass(frozen=True)
class PackedImage:
    """``RawImage`` with ``data`` as a 1-D uint8 array (``step * height`` bytes), before any bytes copy.

    ``data`` may share memory with the array given to ``pack_image`` (when it already had the
    message layout), so treat it as read-only and copy it into the message promptly.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: np.ndarray


def pack_image(array: np.ndarray, encoding: str, *, step: int | None = None,
               is_bigendian: bool = False) -> PackedImage:
    """Like ``encode_image``, without the final copy into ``bytes`` (for adapters that copy anyway)."""
    info = encoding_info(encoding)
    pixels = _check_array(array, info)
    big = _check_bigendian(is_bigendian)
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    row_bytes = width * info.pixel_bytes
    step = row_bytes if step is None else _check_int("step", step, 1)
    _check_step(step, width, info)
    stored = info.dtype.newbyteorder(">" if big else "<")
    packed = np.ascontiguousarray(pixels, dtype=stored)  # no copy when already contiguous in that order
    if step == row_bytes:
        data = packed.reshape(-1).view(np.uint8)
    else:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = packed.view(np.uint8).reshape(height, row_bytes)
        data = padded.reshape(-1)
    return PackedImage(height, width, info.name, big, step, data)


def encode_image(array: np.ndarray, encoding: str, *, step: int | None = None,
                 is_bigendian: bool = False) -> RawImage:
    """Array -> sensor_msgs/Image fields.

    ``array`` must match the encoding exactly: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise,
    with the encoding's dtype (uint8 or uint16, any byte order) and channels already in the
    encoding's order (no conversion happens). ``step`` (bytes per row, default tightly packed) may
    add zero padding; ``is_bigendian`` writes 16-bit samples big-endian.
    """
    packed = pack_image(array, encoding, step=step, is_bigendian=is_bigendian)
    return RawImage(packed.height, packed.width, packed.encoding, packed.is_bigendian, packed.step,
                    packed.data.tobytes())


# ---------------------------------------------------------------------------------------------
# Conversions to the project's conventions
# ---------------------------------------------------------------------------------------------
def infer_encoding(array: np.ndarray) -> str:
    """The natural encoding of an RGB-ordered array: mono8/mono16 for ``(H, W)``, rgb8/rgba8 for colour."""
    if not isinstance(array, np.ndarray):
        raise ImageCodecError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim == 2 and array.dtype == np.uint8:
        return "mono8"
    if array.ndim == 2 and array.dtype == np.uint16:
        return "mono16"
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (3, 4):
        return "rgb8" if array.shape[2] == 3 else "rgba8"
    raise ImageCodecError(f"no encoding for an array of dtype {array.dtype} and shape {array.shape}; "
                          "expected uint8/uint16 (H, W) or uint8 (H, W, 3|4)")


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded image -> ``(H, W, 3)`` RGB of the same dtype (alpha dropped, grey replicated).

    Returns ``array`` itself when it already is ``rgb8``; otherwise a new array.
    """
    info = encoding_info(encoding)
    pixels = _check_array(array, info)
    if info.channels == 1:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if info.channel_order == "RGB":
        return pixels
    if info.channel_order.startswith("BGR"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def to_float01(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded image -> float32 in [0, 1]: ``(H, W)`` grey, or ``(H, W, 3)`` RGB for colour.

    Integer samples are divided by their maximum (255 or 65535); this is a linear scaling, not an
    AGC (use ``codec.agc.ThermalAGC`` for raw 16-bit thermal counts).
    """
    info = encoding_info(encoding)
    pixels = _check_array(array, info)
    scale = np.float32(1.0 / np.iinfo(info.dtype).max)
    if info.channels == 1:
        return pixels.astype(np.float32) * scale
    return to_rgb(pixels, info.name).astype(np.float32) * scale


# ---------------------------------------------------------------------------------------------
# Compressed images
# ---------------------------------------------------------------------------------------------
def parse_compressed_format(format_: Any) -> CompressedFormat:
    """Parse a CompressedImage ``format``: ``"jpeg"``, ``"png"`` or ``"rgb8; jpeg compressed bgr8"``."""
    if not isinstance(format_, str):
        raise ImageCodecError(f"compressed format must be a string, got {type(format_).__name__}")
    source_encoding: str | None = None
    spec = format_.strip()
    if ";" in spec:
        head, spec = (part.strip() for part in spec.split(";", 1))
        source_encoding = head or None
    words = spec.lower().split()
    if not words:
        raise ImageCodecError(f"compressed format {format_!r} names no codec (expected jpeg or png)")
    if words[0] == "compresseddepth" or "compresseddepth" in words:
        raise ImageCodecError(f"compressed format {format_!r}: compressedDepth images are not supported")
    codec = _CODEC_ALIASES.get(words[0])
    if codec is None:
        raise ImageCodecError(f"compressed format {format_!r}: unsupported codec {words[0]!r} "
                              f"(supported: {', '.join(COMPRESSED_CODECS)})")
    stored_order: str | None = None
    if len(words) > 1:
        if words[1] != "compressed" or len(words) > 3:
            raise ImageCodecError(f"compressed format {format_!r} is not '<encoding>; <codec> compressed "
                                  "[<order>]'")
        stored_order = words[2] if len(words) == 3 else None
    return CompressedFormat(codec, source_encoding, stored_order)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
#: JPEG start-of-frame markers (they carry the size): SOF0..SOF15 except DHT, JPG and DAC.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field: TEM, RST0..RST7 (SOI/EOI are handled on their own).
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
#: Largest width or height either format can state (PNG: 2**31 - 1; JPEG: 65535).
_PNG_MAX_SIDE = 2**31 - 1


def compressed_image_size(data: Any) -> tuple[int, int]:
    """``(width, height)`` of a PNG or JPEG file, read from its header without decoding any pixel.

    PNG: the IHDR chunk that must follow the signature. JPEG: the first start-of-frame segment,
    walking the marker segments from the start of the file. ``ImageCodecError`` for anything
    else: not PNG or JPEG, truncated before the size, a zero size, malformed segments.
    """
    buffer = _as_byte_array(data)
    head = buffer[:8].tobytes()
    if head == PNG_SIGNATURE:
        return _png_size(buffer)
    if head[:2] == JPEG_SOI:
        return _jpeg_size(buffer)
    raise ImageCodecError(f"compressed data is neither PNG nor JPEG (starts with {head[:8].hex(' ') or 'nothing'})")


def _png_size(buffer: np.ndarray) -> tuple[int, int]:
    ihdr = buffer[8:8 + 8 + 13].tobytes()
    if len(ihdr) < 21:
        raise ImageCodecError(f"PNG of {buffer.size} bytes ends before its IHDR chunk")
    length, chunk_type = int.from_bytes(ihdr[:4], "big"), ihdr[4:8]
    if chunk_type != b"IHDR" or length != 13:
        raise ImageCodecError(f"PNG does not start with a 13-byte IHDR chunk (found {chunk_type!r}, {length} bytes)")
    width, height = int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big")
    if not (1 <= width <= _PNG_MAX_SIDE and 1 <= height <= _PNG_MAX_SIDE):
        raise ImageCodecError(f"PNG header states an invalid size {width}x{height}")
    return width, height


def _jpeg_size(buffer: np.ndarray) -> tuple[int, int]:
    data = buffer.tobytes()
    position = 2  # after SOI
    while True:
        # Like libjpeg, skip stray bytes up to the next marker; any number of 0xFF fill bytes may
        # precede a marker code.
        position = data.find(b"\xff", position)
        if position < 0:
            raise ImageCodecError(f"JPEG of {len(data)} bytes ends before its frame header (SOF)")
        while position < len(data) and data[position] == 0xFF:
            position += 1
        if position >= len(data):
            raise ImageCodecError(f"JPEG of {len(data)} bytes ends before its frame header (SOF)")
        marker = data[position]
        position += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE_MARKERS:
            continue  # 0xFF00 is a stuffed data byte, not a marker
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, or scan data before any frame header
            raise ImageCodecError(f"JPEG reaches marker 0x{marker:02X} before its frame header (SOF)")
        if position + 2 > len(data):
            raise ImageCodecError(f"JPEG of {len(data)} bytes ends inside the segment of marker 0x{marker:02X}")
        length = int.from_bytes(data[position:position + 2], "big")
        if length < 2:
            raise ImageCodecError(f"JPEG segment 0x{marker:02X} has an invalid length {length}")
        if marker in _JPEG_SOF_MARKERS:
            if length < 8 or position + 7 > len(data):
                raise ImageCodecError(f"JPEG frame header (0x{marker:02X}) is truncated")
            height = int.from_bytes(data[position + 3:position + 5], "big")
            width = int.from_bytes(data[position + 5:position + 7], "big")
            if width == 0 or height == 0:
                # Height 0 means "defined later by a DNL segment", which decoders rarely support.
                raise ImageCodecError(f"JPEG frame header states a size of {width}x{height}")
            return width, height
        position += length


def decode_compressed(format_: str, data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage fields -> a new array.

    Returns ``(H, W)`` uint8/uint16 for grey, ``(H, W, 3)`` uint8 RGB for colour, ``(H, W, 4)`` RGBA
    for a PNG with alpha. ``ImageCodecError`` if the format is unknown, the data is not a PNG or
    JPEG file or does not decode; ``ImageTooLargeError`` when the size in the file's header exceeds
    ``max_pixels`` (checked before decoding: a small file can state a huge image).
    """
    parsed = parse_compressed_format(format_)
    buffer = _as_byte_array(data)
    if buffer.size == 0:
        raise ImageCodecError(f"compressed image ({format_!r}) has no data")
    width, height = compressed_image_size(buffer)
    check_pixel_count(width, height, max_pixels, f"compressed image ({format_!r})")
    try:
        # IMREAD_UNCHANGED keeps grey as grey, 16-bit PNG as 16-bit and ignores EXIF rotation,
        # as image_transport's compressed subscriber does by default.
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageCodecError(f"compressed image ({format_!r}, {buffer.size} bytes) does not decode: "
                              f"{str(error).strip()}") from None
    if pixels is None or pixels.size == 0:
        raise ImageCodecError(f"compressed image ({format_!r}, {buffer.size} bytes) does not decode as "
                              f"{parsed.codec}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageCodecError(f"compressed image ({format_!r}) decoded to unsupported dtype {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageCodecError(f"compressed image ({format_!r}) decoded to unsupported shape {pixels.shape}")
    # OpenCV hands back the file's pixels in B, G, R order, unless the publisher fed the encoder
    # RGB data ("... compressed rgb8"), in which case the stored order is already RGB.
    if parsed.stored_order is not None and parsed.stored_order.startswith("rgb"):
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]])


def encode_compressed(array: np.ndarray, fmt: str = "jpeg", *, encoding: str | None = None,
                      jpeg_quality: int = 90, png_level: int = 3) -> RawCompressedImage:
    """Array -> sensor_msgs/CompressedImage fields, as image_transport's compressed publisher does.

    ``encoding`` states the array's layout (default ``infer_encoding``: ``(H, W)`` mono8/mono16,
    ``(H, W, 3|4)`` rgb8/rgba8). Colour is stored as BGR (alpha dropped), and ``format`` is
    ``"<encoding>; <fmt> compressed bgr8"`` (``"<encoding>; <fmt> compressed "`` for grey).
    JPEG holds 8-bit data only; PNG also holds 16-bit grey (exact round trip).
    """
    codec = _CODEC_ALIASES.get(fmt.lower()) if isinstance(fmt, str) else None
    if codec is None:
        raise ImageCodecError(f"compressed format must be one of {COMPRESSED_CODECS}, got {fmt!r}")
    encoding = infer_encoding(array) if encoding is None else encoding
    info = encoding_info(encoding)
    pixels = _check_array(array, info)
    if codec == "jpeg" and info.dtype != np.uint8:
        raise ImageCodecError(f"JPEG holds 8-bit samples only; {info.name} needs png")
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ImageCodecError(f"jpeg_quality must be an integer in [1, 100], got {jpeg_quality!r}")
    if not isinstance(png_level, int) or not 0 <= png_level <= 9:
        raise ImageCodecError(f"png_level must be an integer in [0, 9], got {png_level!r}")
    if info.is_colour:
        bgr = pixels[:, :, :3] if info.channel_order.startswith("BGR") else pixels[:, :, 2::-1]
        pixels = np.ascontiguousarray(bgr)
        suffix = "bgr8"
    else:
        pixels = np.ascontiguousarray(pixels, dtype=info.dtype)  # native byte order for OpenCV
        suffix = ""
    params = ([cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if codec == "jpeg"
              else [cv2.IMWRITE_PNG_COMPRESSION, png_level])
    try:
        ok, encoded = cv2.imencode(_CV_EXTENSIONS[codec], pixels, params)
    except cv2.error as error:
        raise ImageCodecError(f"OpenCV cannot encode {info.name} {pixels.shape} as {codec}: "
                              f"{str(error).strip()}") from None
    if not ok:
        raise ImageCodecError(f"OpenCV failed to encode {info.name} {pixels.shape} as {codec}")
    return RawCompressedImage(f"{info.name}; {codec} compressed {suffix}", encoded.tobytes())
