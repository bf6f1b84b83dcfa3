"""Procedurally drawn photos whose look depends on the species.

Each species has a ``Look``: a body template (beetle, bee, butterfly, …), colours and a pattern.
Each photo draws the organism with jittered colours, then places it with a random pose and
scale on a random background, with clutter, blur, noise and JPEG compression. A tiny CNN learns
the species well but not perfectly: some species share a template and differ in pattern only.

Everything is deterministic for ``(seed, photo_id)``.
"""

from __future__ import annotations

import colorsys
import io
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import fsspec
import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from bioasset.inat_format import IMAGE_SIZES, photo_key
from bioasset.storage import atomic_write_bytes, join

RGB = tuple[int, int, int]
SPRITE = 256  # sprite canvas side; the organism is drawn head up, centred
MAX_RENDER_SIDE = 1024  # larger sizes are upscaled from this: drawing 2048 px adds nothing


@dataclass(frozen=True)
class Pattern:
    kind: str  # a key of _PATTERN_PAINTERS
    color: RGB
    count: int = 0


@dataclass(frozen=True)
class Look:
    body: str  # a key of _BODIES
    main: RGB  # the patterned part: elytra, abdomen, wings, shield, leaf, flowers
    second: RGB  # head, thorax, pronotum, berries, leaves
    patterns: tuple[Pattern, ...] = ()
    aspect: float = 1.0  # length / width of the main part, relative to the template
    accent: RGB | None = None
    layout_seed: int = 0  # where spots sit: fixed for a species, jittered per photo


_BLACK = (22, 20, 18)
_WHITE = (242, 240, 232)

#: Hand-made looks of the catalogue species, by taxon id.
SPECIES_LOOKS: dict[int, Look] = {
    47355: Look("beetle", (181, 108, 48), (38, 138, 72), (Pattern("side_dots", _WHITE, 5),), aspect=1.3),
    48484: Look("beetle", (204, 32, 26), _BLACK, (Pattern("spots", _BLACK, 7),), aspect=0.86, accent=_WHITE, layout_seed=1),
    48435: Look("beetle", (226, 122, 34), (232, 222, 196), (Pattern("spots", _BLACK, 17),), aspect=0.9, layout_seed=2),
    47219: Look("bee", (222, 168, 58), (112, 82, 52), (Pattern("bands", (64, 38, 20), 4),), aspect=1.35),
    118970: Look("bee", (28, 27, 26), (232, 196, 58), (Pattern("mottled", (70, 66, 60), 30),), aspect=1.0),
    48662: Look("butterfly", (236, 122, 22), _BLACK, (Pattern("veins", _BLACK, 6), Pattern("border_dots", _WHITE, 9))),
    49133: Look("butterfly", (40, 34, 32), _BLACK, (Pattern("band", (214, 52, 30)), Pattern("tips", _WHITE, 4))),
    48548: Look("butterfly", (234, 150, 98), (70, 50, 40), (Pattern("spots", _BLACK, 12), Pattern("tips", _WHITE, 3)), layout_seed=3),
    55626: Look("butterfly", (242, 240, 226), (60, 60, 58), (Pattern("tips", (58, 58, 56)), Pattern("spots", (58, 58, 56), 2)), layout_seed=4),
    81923: Look("shieldbug", (122, 102, 82), (96, 80, 64), (Pattern("mottled", (72, 60, 46), 60), Pattern("border_dots", (220, 210, 190), 12))),
    324726: Look("hopper", (196, 174, 166), (40, 36, 34), (Pattern("spots", _BLACK, 14),), accent=(206, 42, 40), layout_seed=5),
    61300: Look("fly", (58, 168, 96), (60, 150, 90), (Pattern("mottled", (30, 110, 70), 20),), accent=(176, 42, 30)),
    4338: Look("bird", (246, 246, 244), (236, 214, 150), (Pattern("tips", _BLACK),), accent=(150, 160, 170)),
    54641: Look("leaf", (84, 152, 62), (236, 222, 228), (Pattern("veins", (52, 110, 40), 7),)),
    82798: Look("flowers", (246, 246, 240), (38, 92, 42), ()),
}

_INSECT_BODIES = ("beetle", "bee", "butterfly", "shieldbug", "hopper", "fly")
_PATTERN_KINDS = ("spots", "bands", "mottled", "tips", "band", "side_dots", "border_dots")


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))


def derived_look(taxon_id: int) -> Look:
    """The look of a species with no hand-made one: a function of its id only, so that every
    snapshot and every seed draws the same species the same way."""
    rng = np.random.default_rng([taxon_id, 11])
    hue = rng.random()
    kinds = rng.choice(len(_PATTERN_KINDS), size=int(rng.integers(1, 3)), replace=False)
    patterns = tuple(
        Pattern(_PATTERN_KINDS[k], _hsv(hue + 0.5, rng.uniform(0, 0.6), rng.uniform(0.05, 0.95)), int(rng.integers(2, 14)))
        for k in kinds
    )
    return Look(
        body=_INSECT_BODIES[int(rng.integers(len(_INSECT_BODIES)))],
        main=_hsv(hue, rng.uniform(0.3, 0.95), rng.uniform(0.35, 0.95)),
        second=_hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.8)),
        patterns=patterns,
        aspect=float(rng.uniform(0.85, 1.4)),
        layout_seed=taxon_id,
    )


def look_for(species_id: int) -> Look:
    return SPECIES_LOOKS.get(species_id) or derived_look(species_id)


# --- drawing the organism --------------------------------------------------------------------


@dataclass
class _Sprite:
    look: Look
    rng: np.random.Generator
    image: Image.Image = field(default_factory=lambda: Image.new("RGBA", (SPRITE, SPRITE), (0, 0, 0, 0)))

    def __post_init__(self) -> None:
        self.draw = ImageDraw.Draw(self.image)

    def color(self, rgb: RGB, spread: float = 0.06) -> tuple[int, int, int, int]:
        # Mostly brightness, a little hue: white stays white.
        jitter = 1.0 + self.rng.normal(0.0, spread) + self.rng.normal(0.0, spread / 3, 3)
        r, g, b = (int(np.clip(c * j, 0, 255)) for c, j in zip(rgb, jitter))
        return (r, g, b, 255)

    def part(self, shape: str, coords, rgb: RGB, patterned: bool = False) -> None:
        """Draw one part; a patterned part gets the look's patterns, clipped to its shape."""
        mask = Image.new("L", self.image.size, 0)
        _shape(ImageDraw.Draw(mask), shape, coords, 255)
        self.image.paste(self.color(rgb), (0, 0), mask)
        if patterned:
            box = mask.getbbox()
            for pattern in self.look.patterns:
                marks = Image.new("L", self.image.size, 0)
                layout = np.random.default_rng([self.look.layout_seed, len(pattern.kind), pattern.count])
                _PATTERN_PAINTERS[pattern.kind](_Canvas(ImageDraw.Draw(marks), mask, box, layout, self.rng), pattern)
                self.image.paste(self.color(pattern.color, 0.05), (0, 0), ImageChops.multiply(mask, marks))

    def line(self, points, rgb: RGB, width: int) -> None:
        self.draw.line(points, fill=self.color(rgb), width=width, joint="curve")


def _shape(draw: ImageDraw.ImageDraw, shape: str, coords, fill) -> None:
    if shape == "ellipse":
        draw.ellipse(coords, fill=fill)
    else:
        draw.polygon(coords, fill=fill)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    return (cx - rx, cy - ry, cx + rx, cy + ry)


@dataclass(frozen=True)
class _Canvas:
    """Where a pattern paints: the marks layer, the part's mask and bounding box, and two
    random streams: ``layout`` fixed for the species, ``jitter`` new for each photo."""

    draw: ImageDraw.ImageDraw
    mask: Image.Image
    box: tuple[int, int, int, int]
    layout: np.random.Generator
    jitter: np.random.Generator

    @property
    def size(self) -> tuple[int, int]:
        return (self.box[2] - self.box[0], self.box[3] - self.box[1])


def _spots(c: _Canvas, pattern: Pattern) -> None:
    (x0, y0, _, _), (w, h) = c.box, c.size
    radius = max(2.0, 0.55 * min(w, h) / math.sqrt(pattern.count + 1))
    for _ in range(pattern.count):
        # Symmetric about the body axis, as on an insect.
        u, v = c.layout.uniform(0.08, 0.48), c.layout.uniform(0.12, 0.9)
        for side in (-1, 1):
            cx = x0 + w * (0.5 + side * u) + c.jitter.normal(0, 1.2)
            cy = y0 + h * v + c.jitter.normal(0, 1.2)
            c.draw.ellipse(_ellipse(cx, cy, radius / 2, radius / 2), fill=255)


def _bands(c: _Canvas, pattern: Pattern) -> None:
    (x0, y0, x1, _), (_, h) = c.box, c.size
    for i in range(pattern.count):
        top = y0 + h * (0.2 + 0.75 * i / max(pattern.count, 1))
        c.draw.rectangle((x0, top, x1, top + h * 0.32 / max(pattern.count, 1)), fill=255)


def _mottled(c: _Canvas, pattern: Pattern) -> None:
    (x0, y0, _, _), (w, h) = c.box, c.size
    for _ in range(pattern.count):
        cx, cy = x0 + w * c.jitter.random(), y0 + h * c.jitter.random()
        r = c.jitter.uniform(1.5, 0.09 * max(w, h))
        c.draw.ellipse(_ellipse(cx, cy, r, r * c.jitter.uniform(0.5, 1.0)), fill=255)


def _veins(c: _Canvas, pattern: Pattern) -> None:
    (x0, y0, _, _), (w, h) = c.box, c.size
    base_x, base_y = x0 + w / 2, y0 + h * 0.55
    for i in range(pattern.count):
        angle = math.pi * (i + 0.5) / pattern.count
        for side in (-1, 1):
            end = (base_x + side * math.cos(angle) * w * 0.6, base_y - math.sin(angle - 0.6) * h * 0.6)
            c.draw.line([(base_x, base_y), end], fill=255, width=max(2, int(w / 60)))


def _border_dots(c: _Canvas, pattern: Pattern) -> None:
    (x0, y0, _, _), (w, h) = c.box, c.size
    # The edge band: the mask minus its erosion (a box blur thresholded: a fast MinFilter).
    eroded = c.mask.filter(ImageFilter.BoxBlur(4)).point(lambda v: 255 if v > 250 else 0)
    c.draw.bitmap((0, 0), ImageChops.subtract(c.mask, eroded), fill=255)
    for i in range(pattern.count):
        angle = 2 * math.pi * i / pattern.count + c.layout.uniform(0, 0.2)
        cx, cy = x0 + w / 2 + math.cos(angle) * w * 0.47, y0 + h / 2 + math.sin(angle) * h * 0.47
        c.draw.ellipse(_ellipse(cx, cy, 2.5, 2.5), fill=0)


def _tips(c: _Canvas, pattern: Pattern) -> None:
    """The far tip of a wing: dark, or a row of dots towards the body."""
    ys, xs = np.nonzero(np.asarray(c.mask))
    far = int(np.argmax((xs - SPRITE / 2) ** 2 + (ys - SPRITE / 2) ** 2))
    tip_x, tip_y = float(xs[far]), float(ys[far])
    if pattern.count:
        for k in range(pattern.count):
            t = 0.1 + 0.07 * k
            x, y = tip_x + (SPRITE / 2 - tip_x) * t, tip_y + (SPRITE / 2 - tip_y) * t + 8 * (k % 2)
            c.draw.ellipse(_ellipse(x, y, 3.5, 3.5), fill=255)
    else:
        radius = 0.3 * max(c.size)
        c.draw.ellipse(_ellipse(tip_x, tip_y, radius, radius), fill=255)


def _band(c: _Canvas, pattern: Pattern) -> None:
    """A slanting band across the wing and a margin along its edge (the red admiral's)."""
    (x0, y0, x1, y1), (_, h) = c.box, c.size
    c.draw.polygon([(x0, y0 + h * 0.35), (x1, y0 + h * 0.15), (x1, y0 + h * 0.3), (x0, y0 + h * 0.5)], fill=255)
    c.draw.rectangle((x0, y1 - h * 0.1, x1, y1), fill=255)


def _side_dots(c: _Canvas, pattern: Pattern) -> None:
    """Tufts along both sides (the Japanese beetle's white hairs)."""
    (x0, y0, x1, _), (_, h) = c.box, c.size
    for i in range(pattern.count):
        cy = y0 + h * (0.45 + 0.5 * i / pattern.count)
        for cx in (x0 + 3, x1 - 3):
            c.draw.ellipse(_ellipse(cx, cy, 6, 5), fill=255)


_PATTERN_PAINTERS = {
    "spots": _spots, "bands": _bands, "mottled": _mottled, "veins": _veins, "border_dots": _border_dots,
    "tips": _tips, "band": _band, "side_dots": _side_dots,
}


def _legs(sprite: _Sprite, cx: float, cy: float, spread: float, length: float) -> None:
    for i, dy in enumerate((-0.6, 0.0, 0.6)):
        for side in (-1, 1):
            knee = (cx + side * spread, cy + dy * spread)
            foot = (cx + side * (spread + length), cy + dy * spread + (i - 1) * length * 0.7)
            sprite.line([(cx, cy + dy * spread * 0.5), knee, foot], _BLACK, 4)


def _antennae(sprite: _Sprite, cx: float, top: float, length: float) -> None:
    for side in (-1, 1):
        sprite.line([(cx + side * 4, top), (cx + side * length * 0.5, top - length)], _BLACK, 3)


def _beetle(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    length = 150 * min(look.aspect, 1.3) / 1.3 + 20
    width = length / look.aspect
    _legs(s, c, c + 10, width * 0.45, 28)
    _antennae(s, c, c - length * 0.62, 26)
    s.part("ellipse", _ellipse(c, c - length * 0.52, width * 0.2, width * 0.14), look.second)
    s.part("ellipse", _ellipse(c, c - length * 0.36, width * 0.42, length * 0.14), look.second)
    if look.accent:  # pale patches on the pronotum
        for side in (-1, 1):
            s.part("ellipse", _ellipse(c + side * width * 0.26, c - length * 0.37, width * 0.1, length * 0.07), look.accent)
    s.part("ellipse", _ellipse(c, c + length * 0.12, width / 2, length * 0.4), look.main, patterned=True)
    s.line([(c, c - length * 0.27), (c, c + length * 0.5)], _BLACK, 2)


def _bee(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    length, width = 130 * look.aspect / 1.35 + 30, 72 / math.sqrt(look.aspect)
    for side in (-1, 1):  # translucent wings
        s.image.alpha_composite(_wing_layer(c + side * width * 0.75, c - length * 0.18, width * 0.75, length * 0.2, side))
    _legs(s, c, c - length * 0.12, width * 0.4, 24)
    _antennae(s, c, c - length * 0.5, 22)
    s.part("ellipse", _ellipse(c, c - length * 0.42, width * 0.3, width * 0.26), _BLACK)
    s.part("ellipse", _ellipse(c, c - length * 0.18, width * 0.45, width * 0.42), look.second)
    s.part("ellipse", _ellipse(c, c + length * 0.2, width * 0.5, length * 0.34), look.main, patterned=True)


def _wing_layer(cx: float, cy: float, rx: float, ry: float, side: int) -> Image.Image:
    layer = Image.new("RGBA", (SPRITE, SPRITE), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse(_ellipse(cx, cy, rx, ry), fill=(225, 230, 235, 130), outline=(90, 90, 90, 200), width=2)
    return layer.rotate(-side * 25, center=(cx, cy))


def _butterfly(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    for side in (-1, 1):
        fore = [(c, c - 8), (c + side * 118, c - 92), (c + side * 112, c - 20), (c + side * 30, c + 8)]
        hind = [(c, c + 2), (c + side * 88, c + 10), (c + side * 70, c + 82), (c + side * 20, c + 66)]
        s.part("polygon", hind, look.main, patterned=True)
        s.part("polygon", fore, look.main, patterned=True)
    s.part("ellipse", _ellipse(c, c + 10, 9, 62), look.second)
    s.part("ellipse", _ellipse(c, c - 56, 10, 10), look.second)
    _antennae(s, c, c - 64, 40)


def _shieldbug(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    _legs(s, c, c + 5, 50, 30)
    _antennae(s, c, c - 80, 50)
    s.part("polygon", [(c - 14, c - 88), (c + 14, c - 88), (c + 20, c - 60), (c - 20, c - 60)], look.second)
    shield = [(c - 70, c - 50), (c - 20, c - 66), (c + 20, c - 66), (c + 70, c - 50), (c + 56, c + 40), (c, c + 100), (c - 56, c + 40)]
    s.part("polygon", shield, look.main, patterned=True)


def _hopper(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    _legs(s, c, c - 20, 34, 26)
    s.part("ellipse", _ellipse(c, c - 80, 22, 18), look.second)
    for side in (-1, 1):  # the red hind wings peek out behind the forewings
        s.part("polygon", [(c, c - 50), (c + side * 58, c + 10), (c + side * 50, c + 60), (c, c + 40)], look.accent or look.second)
    wings = [(c - 30, c - 66), (c + 30, c - 66), (c + 44, c + 70), (c, c + 110), (c - 44, c + 70)]
    s.part("polygon", wings, look.main, patterned=True)


def _fly(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    for side in (-1, 1):
        s.image.alpha_composite(_wing_layer(c + side * 42, c + 10, 50, 20, side))
    _legs(s, c, c - 15, 30, 26)
    s.part("ellipse", _ellipse(c, c - 40, 34, 30), look.second)
    s.part("ellipse", _ellipse(c, c + 28, 30, 44), look.main, patterned=True)
    for side in (-1, 1):
        s.part("ellipse", _ellipse(c + side * 18, c - 72, 14, 16), look.accent or look.second)


def _bird(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    for side in (-1, 1):  # long wings, outstretched, with the black tips
        s.part("polygon", [(c, c - 30), (c + side * 124, c - 8), (c + side * 122, c + 16), (c, c + 30)], look.main, patterned=True)
    s.part("ellipse", _ellipse(c, c + 10, 28, 90), look.main)
    s.part("ellipse", _ellipse(c, c - 74, 22, 24), look.second)
    s.part("polygon", [(c - 7, c - 92), (c + 7, c - 92), (c, c - 124)], look.accent or look.second)
    s.part("polygon", [(c - 16, c + 90), (c + 16, c + 90), (c, c + 124)], look.main)


def _leaf(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    lobes = [(c, c + 110)] + [
        (c + 100 * math.sin(t) * (0.75 + 0.25 * math.cos(3 * t)), c - 10 - 100 * math.cos(t) * (0.8 + 0.2 * math.cos(5 * t)))
        for t in np.linspace(-2.6, 2.6, 40)
    ]
    s.line([(c, c + 126), (c, c + 100)], look.main, 6)
    s.part("polygon", lobes, look.main, patterned=True)
    for k in range(4):  # berries beside the leaf
        s.part("ellipse", _ellipse(c + 84 + 8 * (k % 2), c + 60 + 14 * k, 10, 14), look.second)


def _flowers(s: _Sprite) -> None:
    look, c = s.look, SPRITE / 2
    for angle in (-2.4, -1.2, 0.0, 1.2, 2.4):  # a whorl of glossy leaves
        tip = (c + 110 * math.sin(angle), c + 30 - 110 * math.cos(angle))
        side = (18 * math.cos(angle), 18 * math.sin(angle))
        s.part("polygon", [(c - side[0], c + 30 - side[1]), tip, (c + side[0], c + 30 + side[1])], look.second)
    for k in range(16):  # drooping bells along two arching sprays
        side = -1 if k % 2 else 1
        x, y = c + side * (12 + 6 * (k // 2)), c - 90 + 11 * (k // 2)
        s.part("ellipse", _ellipse(x, y, 11, 14), look.main)


_BODIES = {
    "beetle": _beetle, "bee": _bee, "butterfly": _butterfly, "shieldbug": _shieldbug, "hopper": _hopper,
    "fly": _fly, "bird": _bird, "leaf": _leaf, "flowers": _flowers,
}


def draw_organism(look: Look, rng: np.random.Generator) -> Image.Image:
    """The organism on a transparent ``SPRITE`` x ``SPRITE`` canvas, head up."""
    sprite = _Sprite(look, rng)
    _BODIES[look.body](sprite)
    return sprite.image


# --- the photo -------------------------------------------------------------------------------

_BACKGROUND_PALETTES: tuple[tuple[RGB, ...], ...] = (
    ((58, 96, 40), (88, 132, 52), (40, 70, 34), (120, 150, 70)),  # foliage
    ((96, 72, 50), (130, 100, 70), (70, 52, 38), (150, 124, 92)),  # bark and soil
    ((150, 186, 222), (190, 210, 232), (120, 160, 205), (230, 234, 240)),  # sky
    ((168, 112, 60), (120, 80, 44), (196, 150, 90), (90, 70, 40)),  # leaf litter
    ((130, 130, 126), (160, 158, 150), (100, 100, 98), (190, 186, 178)),  # stone, walls
    ((70, 120, 50), (220, 190, 60), (200, 90, 140), (240, 240, 230)),  # flowers in grass
)


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    palette = _BACKGROUND_PALETTES[int(rng.integers(len(_BACKGROUND_PALETTES)))]
    # Out-of-focus blobs, drawn and blurred at 1/8 scale (blurring at full size is slow).
    small = Image.new("RGB", (max(1, width // 8), max(1, height // 8)), palette[0])
    draw = ImageDraw.Draw(small)
    scale = max(small.size)
    for _ in range(int(rng.integers(12, 28))):
        color = tuple(int(np.clip(c + rng.normal(0, 14), 0, 255)) for c in palette[int(rng.integers(len(palette)))])
        cx, cy, r = rng.uniform(0, small.width), rng.uniform(0, small.height), rng.uniform(0.05, 0.3) * scale
        draw.ellipse(_ellipse(cx, cy, r, r * rng.uniform(0.4, 1.0)), fill=color)
    image = small.filter(ImageFilter.GaussianBlur(scale / 28)).resize((width, height), Image.Resampling.BILINEAR)
    _clutter(ImageDraw.Draw(image), width, height, palette, rng, count=int(rng.integers(0, 10)))
    return image


def _clutter(draw: ImageDraw.ImageDraw, width: int, height: int, palette, rng: np.random.Generator, count: int) -> None:
    """Twigs and grass blades."""
    scale = max(width, height)
    for _ in range(count):
        color = palette[int(rng.integers(len(palette)))]
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.1, 0.6) * scale
        end = (x + math.cos(angle) * length, y + math.sin(angle) * length)
        draw.line([(x, y), end], fill=tuple(int(v) for v in color), width=max(1, int(rng.uniform(0.004, 0.015) * scale)))


#: Share of photos where the subject is far away and out of focus: no model gets them all,
#: which keeps a tiny CNN off 100% however long it trains.
HARD_PHOTO_RATE = 0.03


def render_photo(look: Look, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """One photo of an organism with ``look``, ``width`` x ``height`` pixels."""
    hard = rng.random() < HARD_PHOTO_RATE
    organism = draw_organism(look, rng)
    if rng.random() < 0.5:
        organism = organism.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    organism = organism.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, expand=True)
    organism = organism.crop(organism.getbbox())
    background = _background(width, height, rng)
    short = min(width, height)
    length = rng.uniform(0.16, 0.28) * short if hard else rng.uniform(0.5, 0.9) * short
    factor = length / max(organism.size)
    organism = organism.resize((max(1, round(organism.width * factor)), max(1, round(organism.height * factor))), Image.Resampling.BILINEAR)
    x = int(rng.uniform(0, max(1, width - organism.width)))
    y = int(rng.uniform(0, max(1, height - organism.height)))
    background.paste(organism, (x, y), organism)
    if rng.random() < 0.2:  # a blade of grass in front of the subject
        palette = _BACKGROUND_PALETTES[0]
        _clutter(ImageDraw.Draw(background), width, height, palette, rng, count=int(rng.integers(1, 3)))
    blur = (rng.uniform(1.5, 2.5) if hard else rng.uniform(-0.6, 1.3)) * short / 375  # a third of the photos are sharp
    photo = background.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.3 else background
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-12, 12)
    photo = photo.point([int(np.clip(v * gain + offset, 0, 255)) for v in range(256)] * 3)
    return _add_sensor_noise(photo, rng.uniform(2.0, 7.0), rng)


@cache
def _noise_tile() -> np.ndarray:
    """Unit Gaussian noise (x16, int16), cut at random offsets: drawing fresh noise for every
    photo costs more than the rest of the photo."""
    return (np.random.default_rng(5).standard_normal((1100, 1100, 3), dtype=np.float32) * 16).astype(np.int16)


def _add_sensor_noise(photo: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    tile = _noise_tile()
    width, height = photo.size
    reps_y, reps_x = -(-height // tile.shape[0]), -(-width // tile.shape[1])
    if reps_y > 1 or reps_x > 1:
        tile = np.tile(tile, (reps_y + 1, reps_x + 1, 1))
    y = int(rng.integers(0, tile.shape[0] - height + 1))
    x = int(rng.integers(0, tile.shape[1] - width + 1))
    noise = tile[y : y + height, x : x + width] * np.int16(round(sigma * 4)) // 64
    pixels = np.asarray(photo, dtype=np.int16) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def size_on_disk(original_width: int, original_height: int, size: str) -> tuple[int, int]:
    """Pixel size of the ``size`` rendition of an original: the longest side is capped at the
    size's limit, never enlarged (``square`` is a 75x75 crop)."""
    if size == "square":
        return (IMAGE_SIZES["square"], IMAGE_SIZES["square"])
    longest = max(original_width, original_height)
    scale = min(1.0, IMAGE_SIZES[size] / longest)
    return (max(1, round(original_width * scale)), max(1, round(original_height * scale)))


def photo_jpegs(look: Look, original_width: int, original_height: int, sizes: tuple[str, ...], *, seed: int, photo_id: int) -> dict[str, bytes]:
    """The JPEG bytes of one photo in each of ``sizes``: drawn once at the largest size (at
    most ``MAX_RENDER_SIDE``), then resized."""
    rng = np.random.default_rng([seed, photo_id])
    dims = {size: size_on_disk(original_width, original_height, size) for size in sizes}
    largest = max((d for s, d in dims.items() if s != "square"), key=max, default=(original_width, original_height))
    render_scale = min(1.0, MAX_RENDER_SIDE / max(largest))
    drawn = render_photo(look, round(largest[0] * render_scale), round(largest[1] * render_scale), rng)
    quality = int(rng.integers(72, 93))
    out: dict[str, bytes] = {}
    for size, (width, height) in dims.items():
        if size == "square":
            side = min(drawn.size)
            left, top = (drawn.width - side) // 2, (drawn.height - side) // 2
            image = drawn.crop((left, top, left + side, top + side)).resize((width, height), Image.Resampling.LANCZOS)
        elif (width, height) == drawn.size:
            image = drawn
        else:
            image = drawn.resize((width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        out[size] = buffer.getvalue()
    return out


# --- writing the files -----------------------------------------------------------------------


class PhotoToDraw(NamedTuple):
    photo_id: int
    extension: str
    width: int  # of the original
    height: int
    species_id: int  # whose look the photo shows


def _draw_and_write(job: tuple[str, PhotoToDraw, tuple[str, ...], int]) -> int:
    dest, photo, sizes, seed = job
    fs = fsspec.filesystem("file")
    written = 0
    jpegs = photo_jpegs(look_for(photo.species_id), photo.width, photo.height, sizes, seed=seed, photo_id=photo.photo_id)
    for size, data in jpegs.items():
        atomic_write_bytes(fs, join(dest, photo_key(photo.photo_id, size, photo.extension)), data)
        written += len(data)
    return written


def write_photo_images(dest: Path, photos: list[PhotoToDraw], sizes: tuple[str, ...], *, seed: int, workers: int | None = None) -> tuple[int, int]:
    """Draw and write ``photos/{photo_id}/{size}.{extension}`` for each photo; returns the number
    of photos and of bytes written. Several processes draw when there are many photos."""
    jobs = [(str(dest), photo, tuple(sizes), seed) for photo in photos]
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 32))
    if workers <= 1:
        return len(jobs), sum(map(_draw_and_write, jobs))
    # spawn, not fork: the caller may hold threads (DuckDB, a Dagster run) that fork would copy.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return len(jobs), sum(pool.map(_draw_and_write, jobs, chunksize=16))


def remove_photo_images(dest: Path, photo_ids: Iterable[int]) -> None:
    """Remove every image of ``photo_ids``, as when photos are deleted upstream."""
    for photo_id in photo_ids:
        folder = dest / Path(photo_key(photo_id, "x", "y")).parent
        if folder.is_dir():
            shutil.rmtree(folder)
