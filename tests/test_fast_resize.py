"""The download engine's fast resize path (simplejpeg + OpenCV) against Pillow's BILINEAR."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from bioasset.download import fast_resize
from bioasset.download.images import ImageRejected, shorter_side_target, verify_image
from bioasset.sample_bucket.images import look_for, render_photo


def jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def zone_plate(width: int, height: int) -> np.ndarray:
    """Rings whose frequency rises to the Nyquist limit at the edges: aliasing shows as false rings."""
    y, x = np.mgrid[0:height, 0:width].astype(float)
    radius2 = (x - width / 2) ** 2 + (y - height / 2) ** 2
    return (127.5 + 127.5 * np.cos(np.pi * radius2 / (2 * max(width, height)))).astype(np.uint8)


def sample_photo(width: int, height: int, species: int = 3) -> np.ndarray:
    return np.asarray(render_photo(look_for(species), width, height, np.random.default_rng(species)).convert("RGB"))


def pillow_bilinear(data: bytes, target: tuple[int, int]) -> np.ndarray:
    """What the engine's Pillow path makes: libjpeg's scaled decode when the target allows, then BILINEAR."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft(image.mode, target)
        return np.asarray(image.resize(target, Image.Resampling.BILINEAR)).astype(float)


def fast(data: bytes, target: tuple[int, int]) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert fast_resize.handles(image)
        shrunk = fast_resize.shrink_jpeg(data, image.mode, image.size, target)
    assert shrunk is not None
    assert shrunk.size == target
    return np.asarray(shrunk).astype(float)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean()))


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1024, 768)])
def test_photos_match_pillow_bilinear_within_a_grey_level(size):
    data = jpeg(sample_photo(*size))
    target = shorter_side_target(*size, 256)
    assert rms(fast(data, target), pillow_bilinear(data, target)) < 1.5


@pytest.mark.parametrize("size", [(500, 375), (1024, 768)])
def test_zone_plate_is_antialiased(size):
    """Fine detail is smoothed away as Pillow's antialiased filter does, not folded into false
    patterns as plain bilinear sampling folds it."""
    data = jpeg(zone_plate(*size))
    target = shorter_side_target(*size, 256)
    reference = pillow_bilinear(data, target)
    with Image.open(io.BytesIO(data)) as image:
        aliased = cv2.resize(np.asarray(image), target, interpolation=cv2.INTER_LINEAR).astype(float)
    fast_error, aliased_error = rms(fast(data, target), reference), rms(aliased, reference)
    assert fast_error < 0.65 * aliased_error, (fast_error, aliased_error)


def test_grey_jpegs_stay_grey():
    data = jpeg(zone_plate(400, 300))
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L"
    verified = verify_image(data, extension="jpg", resize_shorter_side=100)
    with Image.open(io.BytesIO(verified.data)) as stored:
        assert stored.mode == "L" and stored.size == (133, 100) == (verified.width, verified.height)


def test_exif_and_colour_profile_are_kept():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated, which viewers must still apply to the smaller copy
    icc_profile = b"\0\0\2\0fake-profile-bytes" * 10
    data = jpeg(sample_photo(400, 300), exif=exif, icc_profile=icc_profile)

    verified = verify_image(data, extension="jpg", resize_shorter_side=150)

    with Image.open(io.BytesIO(verified.data)) as stored:
        assert stored.size == (200, 150)
        assert stored.getexif()[0x0112] == 6
        assert stored.info["icc_profile"] == icc_profile


def test_warnings_fall_back_to_pillow_whose_verdict_stands():
    """libjpeg warns about stray bytes that Pillow decodes anyway: the photo is stored (Pillow's
    policy). A truncated photo is refused by both."""
    data = bytearray(jpeg(sample_photo(400, 300)))
    rng = np.random.default_rng(0)
    for offset in rng.integers(len(data) // 4, len(data) - 16, 20):  # damage in the scan data
        data[offset] = int(rng.integers(0, 256))
    with Image.open(io.BytesIO(bytes(data))) as image:
        assert fast_resize.shrink_jpeg(bytes(data), image.mode, image.size, (200, 150)) is None
        image.load()  # the premise: Pillow decodes these bytes

    verified = verify_image(bytes(data), extension="jpg", resize_shorter_side=150)
    assert (verified.width, verified.height) == (200, 150)

    with pytest.raises(ImageRejected) as truncated:
        verify_image(bytes(data[: len(data) * 3 // 4]), extension="jpg", resize_shorter_side=150)
    assert truncated.value.kind == "corrupt"


def test_cmyk_and_non_default_filters_take_pillow():
    cmyk = io.BytesIO()
    Image.fromarray(sample_photo(200, 160)).convert("CMYK").save(cmyk, "JPEG")
    with Image.open(io.BytesIO(cmyk.getvalue())) as image:
        assert not fast_resize.handles(image)
    verified = verify_image(cmyk.getvalue(), extension="jpg", resize_shorter_side=80)
    assert (verified.width, verified.height) == (100, 80)

    data = jpeg(sample_photo(600, 450))
    box = verify_image(data, extension="jpg", resize_shorter_side=150, resample=Image.Resampling.BOX)
    expected = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (200, 150))
        image.resize((200, 150), Image.Resampling.BOX).save(expected, "JPEG", quality=90)
    assert box.data == expected.getvalue()


@pytest.mark.parametrize(("size", "shorter_side"), [((1024, 517), 256), ((517, 1024), 256), ((226, 283), 224),
                                                     ((2048, 1033), 256), ((1024, 775), 384)])
def test_one_axis_already_at_scale(size, shorter_side):
    """After rounding, one axis may need no smoothing while the other does (1024x517 -> 507x256)."""
    data = jpeg(sample_photo(*size))
    target = shorter_side_target(*size, shorter_side)
    assert rms(fast(data, target), pillow_bilinear(data, target)) < 1.5


def test_every_size_comes_out_at_its_target():
    """A sweep of awkward source sizes and targets: the fast path never fails and never misses the size."""
    source = sample_photo(700, 700)
    for width, height in [(w, h) for w in range(101, 700, 53) for h in range(97, 700, 61)]:
        data = jpeg(np.ascontiguousarray(source[:height, :width]))
        for shorter_side in (64, 90, min(width, height) - 1):
            target = shorter_side_target(width, height, shorter_side)
            fast(data, target)
