"""Decode, verify, resize and hash one image: the CPU side of the download engine.

Runs on worker threads: Pillow releases the GIL while it decodes, resizes and encodes, and
hashlib while it hashes, so a small thread pool keeps every core busy without processes.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from bioasset.download import fast_resize
from bioasset.download.items import EXTENSION_FORMATS

#: Refuse images with more pixels than this (a decompression bomb): far above any camera photo
#: (iNaturalist originals are at most 2048 px long) and below Pillow's own 89 Mpx warning.
DEFAULT_MAX_PIXELS = 64_000_000

#: Downscaling filter: antialiased bilinear, the filter of torchvision's ``Resize``. RGB and grey
#: JPEGs take a SIMD fast path with the same smoothing (bioasset.download.fast_resize); other
#: images, and other filters, go through Pillow.
DEFAULT_RESAMPLE = Image.Resampling.BILINEAR

_GZIP_MAGIC = b"\x1f\x8b"
_ACCEPTED_FORMATS = tuple(sorted(set(EXTENSION_FORMATS.values())))


class ImageRejected(Exception):
    """Bytes that must not enter the store. ``kind`` is one of ``corrupt``, ``not_an_image``,
    ``decompression_bomb``; the message says what was found."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    """The bytes to store and what was verified about them."""

    data: bytes
    sha256: str
    width: int
    height: int
    format: str


def shorter_side_target(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """The size with the shorter side equal to ``shorter_side`` and the aspect ratio kept."""
    if width <= height:
        return shorter_side, max(1, round(height * shorter_side / width))
    return max(1, round(width * shorter_side / height)), shorter_side


def verify_image(
    data: bytes,
    *,
    extension: str,
    resize_shorter_side: int | None = None,
    jpeg_quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resample: Image.Resampling = DEFAULT_RESAMPLE,
) -> VerifiedImage:
    """Decode ``data`` completely, optionally shrink it, and return the bytes to store.

    Images already no larger than the requested shorter side are stored byte for byte (never
    upscaled); so are all images when no resize is asked for. ImageRejected if the bytes are not
    an image, are truncated or corrupt, or have more than ``max_pixels`` pixels.
    """
    data = _gunzipped(data, max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=_ACCEPTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageRejected("decompression_bomb", f"decompression bomb refused by Pillow: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageRejected("not_an_image", f"not an image ({_describe_start(data)})") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}: "
                "a decompression bomb or a far larger image than expected; raise max_pixels if it is genuine",
            )
        try:
            if resize_shorter_side is not None and min(width, height) > resize_shorter_side:
                return _resized(image, data, extension, resize_shorter_side, jpeg_quality, resample)
            if image.format == "JPEG":
                # Decoding at 1/8 scale still entropy-decodes every block, so truncation and broken
                # Huffman data are caught, while the costly inverse DCT and upsampling are skipped.
                image.draft(image.mode, ((width + 7) // 8, (height + 7) // 8))
            image.load()
        except Image.DecompressionBombError as error:
            raise ImageRejected("decompression_bomb", f"decompression bomb refused by Pillow: {error}") from error
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
            # Pillow reports truncation as OSError and broken structures as the others.
            raise ImageRejected("corrupt", f"{image.format} image does not decode: {error}") from error
        return VerifiedImage(data, hashlib.sha256(data).hexdigest(), width, height, image.format)


def _resized(
    image: Image.Image, data: bytes, extension: str, shorter_side: int, jpeg_quality: int, resample: Image.Resampling
) -> VerifiedImage:
    target = shorter_side_target(*image.size, shorter_side)
    exif = image.info.get("exif")
    icc_profile = image.info.get("icc_profile")
    resized = None
    if resample == Image.Resampling.BILINEAR and fast_resize.handles(image):
        resized = fast_resize.shrink_jpeg(data, image.mode, image.size, target)
    if resized is None:  # not a fast-path image, or libjpeg warned: Pillow decides
        if image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target allows: most of the win.
            image.draft(image.mode, target)
        image.load()
        # reducing_gap: shrink by an integer factor first (cheap) when the image is still over 3x the target.
        resized = image.resize(target, resample, reducing_gap=3.0)
    output_format = EXTENSION_FORMATS[extension]
    if output_format == "JPEG" and resized.mode not in ("L", "RGB", "CMYK"):
        resized = resized.convert("RGB")
    elif output_format == "WEBP" and resized.mode not in ("RGB", "RGBA"):
        resized = resized.convert("RGBA" if "A" in resized.mode else "RGB")
    options: dict[str, object] = {}
    if output_format in ("JPEG", "WEBP"):
        options["quality"] = jpeg_quality
    # Keep the EXIF orientation and colour profile so that readers show the photo as the original.
    if exif and output_format in ("JPEG", "PNG", "WEBP"):
        options["exif"] = exif
    if icc_profile and output_format in ("JPEG", "PNG", "WEBP"):
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    resized.save(buffer, output_format, **options)
    encoded = buffer.getvalue()
    return VerifiedImage(encoded, hashlib.sha256(encoded).hexdigest(), *target, output_format)


def _gunzipped(data: bytes, max_pixels: int) -> bytes:
    """Bucket objects may carry gzip bytes (fsspec does not undo Content-Encoding); images never
    start with the gzip magic, so unwrap it, bounded so that a gzip bomb cannot exhaust memory."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    limit = max_pixels * 4 + 1_000_000
    decompressor = zlib.decompressobj(wbits=31)
    try:
        unwrapped = decompressor.decompress(data, limit)
    except zlib.error as error:
        raise ImageRejected("corrupt", f"gzip-wrapped body does not decompress: {error}") from error
    if decompressor.unconsumed_tail:
        raise ImageRejected("decompression_bomb", f"gzip-wrapped body inflates past {limit} bytes")
    return unwrapped


def _describe_start(data: bytes) -> str:
    if not data:
        return "empty body"
    head = data[:40].decode("latin-1").replace("\n", " ").replace("\r", " ")
    return f"{len(data)} bytes starting with {head!r}"
