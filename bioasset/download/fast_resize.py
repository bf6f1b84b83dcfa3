"""The fast path for the commonest resize: an RGB (or grey) JPEG shrunk with the default filter.

Pillow decodes, shrinks and re-encodes an iNaturalist "medium" photo (500 px) to a 256 px shorter
side in about 1.8 ms of CPU on this project's 2-CPU machine, half of it in Pillow's resampler,
which has no SIMD code. Here libjpeg-turbo decodes through simplejpeg (about 0.46 ms), OpenCV's
SIMD kernels filter and resample (0.45 ms), and Pillow encodes as before (0.28 ms, EXIF and ICC
profile kept): about 1.2 ms in all. All three release the GIL, so the engine's threads run in parallel.

The filter is the default one, antialiased bilinear, as Pillow's ``BILINEAR`` computes it: a
triangle as wide as the scale factor ``s``, whose variance is ``s²/6``. Bilinear sampling alone
is a triangle one source pixel wide (variance 1/6), so a Gaussian prefilter of variance
``(s² - 1)/6`` gives the same smoothing in all, and the same protection from aliasing. Results
differ from Pillow's by about one grey level (measured in tests/test_fast_resize.py).

simplejpeg decodes strictly: any libjpeg warning raises, a truncated file as well as a few stray
bytes that Pillow decodes without complaint. Pillow's verdict is the engine's policy, so on any
error this path steps aside (returns None) and the caller decodes with Pillow.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

#: Pillow modes this path handles, and the simplejpeg colour space that decodes them.
_COLORSPACES = {"RGB": "RGB", "L": "GRAY"}

def handles(image: Image.Image) -> bool:
    """Whether ``image`` (opened, not loaded) can take the fast path: a JPEG in RGB or greyscale."""
    return image.format == "JPEG" and image.mode in _COLORSPACES


def shrink_jpeg(data: bytes, mode: str, size: tuple[int, int], target: tuple[int, int]) -> Image.Image | None:
    """``data``, a JPEG of ``size`` in ``mode``, decoded and shrunk to ``target`` with antialiased
    bilinear filtering; None if libjpeg reports any problem with the bytes."""
    import simplejpeg  # imported here: the verification-only path never needs it

    cv2 = _opencv()
    width, height = size
    target_width, target_height = target
    # Let libjpeg-turbo shrink by 2, 4 or 8 in the inverse DCT when the target allows (those
    # factors have SIMD code; the others, e.g. 3/4, decode slower than full size).
    scale = 1
    while scale < 8 and min(width // target_width, height // target_height) >= scale * 2:
        scale *= 2
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace=_COLORSPACES[mode], min_factor=scale,
            min_width=math.ceil(width / scale), min_height=math.ceil(height / scale),
            strict=True,  # raise on any libjpeg warning: Pillow's verdict is the policy (see above)
        )
    except ValueError:
        return None
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    decoded_height, decoded_width = pixels.shape[:2]
    sigma_x = _prefilter_sigma(decoded_width / target_width)
    sigma_y = _prefilter_sigma(decoded_height / target_height)
    try:
        if sigma_x or sigma_y:
            # Kernel sizes per axis: with (0, 0) OpenCV derives both from the sigmas and fails when
            # one of them is 0 (an axis already at the target's scale); a 1-wide kernel leaves it as is.
            kernel = (_kernel_size(sigma_x), _kernel_size(sigma_y))
            pixels = cv2.GaussianBlur(pixels, kernel, sigmaX=sigma_x or 1.0, sigmaY=sigma_y or 1.0)
        pixels = cv2.resize(pixels, target, interpolation=cv2.INTER_LINEAR)
    except cv2.error:
        return None  # whatever OpenCV refuses, Pillow handles
    return Image.fromarray(np.ascontiguousarray(pixels), mode)


def _prefilter_sigma(scale: float) -> float:
    """The Gaussian that, with bilinear sampling, smooths as a triangle ``scale`` pixels wide."""
    return math.sqrt((scale * scale - 1) / 6) if scale > 1.01 else 0.0


def _kernel_size(sigma: float) -> int:
    """Odd, covering three sigmas each side; 1 (no smoothing) for sigma 0."""
    return 2 * math.ceil(3 * sigma) + 1 if sigma else 1


@functools.cache
def _opencv():  # noqa: ANN202 - the cv2 module
    """OpenCV, imported once. Its own thread pool is turned off: the engine already runs one
    decode thread per CPU, and a second level of threads only adds hand-offs."""
    import cv2

    cv2.setNumThreads(1)
    return cv2
