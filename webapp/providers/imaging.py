"""Pure Pillow functions behind the local engine: prompt → edits → image of the right size."""

import io
import re
from collections import deque
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from ..catalog import QUALITY_LONG_SIDE

COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "red": (220, 38, 38),
    "green": (22, 163, 74),
    "blue": (37, 99, 235),
    "yellow": (250, 204, 21),
    "orange": (249, 115, 22),
    "pink": (236, 72, 153),
    "purple": (147, 51, 234),
    "beige": (245, 245, 220),
}
_COLOR_WORDS = "|".join(COLORS)
_BACKGROUND = re.compile(
    rf"\b(?:(?P<before>{_COLOR_WORDS})\s+(?:background|backdrop|bg)"
    rf"|(?:background|backdrop)\s+(?:to\s+|of\s+|in\s+)?(?P<after>{_COLOR_WORDS}))\b"
)
_REMOVE_BACKGROUND = re.compile(r"\b(remove|delete|erase)\s+(the\s+)?background\b")
_ROTATE = re.compile(r"\brotat\w*(?:\s+by)?(?:\s+(?P<deg>-?\d{1,3}))?(?:\s*(?:°|deg\w*))?"
                     r"(?:\s+(?P<dir>left|right|counter-?clockwise|anti-?clockwise|clockwise))?")
# How far (0-255 per channel, summed) a pixel may be from the corner colour and still count as
# background when the local engine replaces it.
BACKGROUND_TOLERANCE = 60
MASK_SIDE = 256


@dataclass(frozen=True)
class Edits:
    background: tuple[int, int, int] | None = None
    grayscale: bool = False
    sepia: bool = False
    invert: bool = False
    blur: bool = False
    sharpen: bool = False
    mirror: bool = False
    flip: bool = False
    rotate: int = 0  # degrees clockwise


def parse_edits(prompt):
    """Read the edits a prompt asks for; words it does not know are ignored."""
    text = prompt.lower()
    background = None
    match = _BACKGROUND.search(text)
    if match:
        background = COLORS[match.group("before") or match.group("after")]
    elif _REMOVE_BACKGROUND.search(text):
        background = COLORS["white"]
    rotate = 0
    match = _ROTATE.search(text)
    if match:
        rotate = int(match.group("deg") or 90)
        if (match.group("dir") or "").startswith(("left", "counter", "anti")):
            rotate = -rotate
    return Edits(
        background=background,
        grayscale=bool(re.search(r"\b(gr[ae]yscale|black and white|b&w|monochrome)\b", text)),
        sepia="sepia" in text,
        invert=bool(re.search(r"\b(invert|negative image)\b", text)),
        blur=bool(re.search(r"\bblur(red|ry)?\b", text)) and "unblur" not in text,
        sharpen=bool(re.search(r"\b(sharpen|sharper|unblur|enhance)\b", text)),
        mirror=bool(re.search(r"\b(mirror\w*|flip\w* horizontal\w*)\b", text)),
        flip=bool(re.search(r"\b(flip\w* vertical\w*|upside down)\b", text)),
        rotate=rotate % 360,
    )


def target_size(quality, aspect_ratio, source_size=None):
    """Width and height for a quality (long side) and a ratio; 'auto' keeps the source's."""
    long_side = QUALITY_LONG_SIDE[quality]
    if aspect_ratio == "auto":
        width, height = source_size or (1, 1)
    else:
        width, height = (int(part) for part in aspect_ratio.split(":"))
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side


class TooManyPixels(ValueError):
    """A stored input larger than the pixel limit: it is not decoded."""


def render(input_image, prompt, quality, aspect_ratio, max_pixels=None):
    """Run the prompt's edits on the input (or draw one, for text-to-image); PNG bytes.

    The input was proven when it was uploaded; it is read back from storage, so its size is
    checked again (against `max_pixels`) before a pixel of it is decoded.
    """
    edits = parse_edits(prompt)
    if input_image is None:
        image = _draw_from_text(prompt, target_size(quality, aspect_ratio), edits)
    else:
        with Image.open(io.BytesIO(input_image)) as source:
            width, height = source.size
            if max_pixels is not None and width * height > max_pixels:
                raise TooManyPixels(f"{width}×{height} is more than {max_pixels:,} pixels")
            image = ImageOps.exif_transpose(source)
            image.load()
        image = _edit(image, edits, quality, aspect_ratio)
    output = io.BytesIO()
    image.save(output, format="PNG", compress_level=3)
    return output.getvalue()


def _edit(image, edits, quality, aspect_ratio):
    image = image.convert("RGBA")
    if edits.mirror:
        image = ImageOps.mirror(image)
    if edits.flip:
        image = ImageOps.flip(image)
    if edits.rotate:
        image = image.rotate(-edits.rotate, expand=True, resample=Image.Resampling.BICUBIC)
    size = target_size(quality, aspect_ratio, image.size)
    if edits.background is not None:
        backdrop = Image.new("RGBA", image.size, edits.background + (255,))
        image = Image.alpha_composite(backdrop, image).convert("RGB")
        image = _replace_background(image, edits.background)
        image = ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=edits.background)
    else:
        image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    return _apply_filters(image, edits)


def _apply_filters(image, edits):
    if edits.grayscale:
        image = ImageOps.grayscale(image.convert("RGB")).convert("RGB")
    if edits.sepia:
        image = ImageOps.colorize(ImageOps.grayscale(image.convert("RGB")), "#2e1f0f", "#f5e6c8")
    if edits.invert:
        image = ImageOps.invert(image.convert("RGB"))
    if edits.blur:
        image = image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 256))
    if edits.sharpen:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=160, threshold=2))
    return image


def _replace_background(image, color):
    """Paint the region connected to the corners, and close to their colour, with `color`."""
    small = image.copy()
    small.thumbnail((MASK_SIDE, MASK_SIDE))
    mask = _background_mask(small)
    mask = mask.resize(image.size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    return Image.composite(Image.new("RGB", image.size, color), image, mask)


def _background_mask(image):
    """An 'L' mask of the pixels flood-reachable from the four corners within tolerance."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.load()
    mask = Image.new("L", rgb.size, 0)
    marks = mask.load()
    for seed in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        if marks[seed]:
            continue
        reference = pixels[seed]
        queue = deque([seed])
        marks[seed] = 255
        while queue:
            x, y = queue.popleft()
            for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if 0 <= nx < width and 0 <= ny < height and not marks[nx, ny]:
                    pixel = pixels[nx, ny]
                    distance = sum(abs(a - b) for a, b in zip(pixel, reference, strict=True))
                    if distance <= BACKGROUND_TOLERANCE:
                        marks[nx, ny] = 255
                        queue.append((nx, ny))
    return mask


def _draw_from_text(prompt, size, edits):
    """Text-to-image for the offline engine: a gradient canvas that carries the prompt."""
    top = edits.background or (37, 99, 235)
    bottom = tuple(max(0, channel - 90) for channel in top)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(16, size[1] // 20))
    text = prompt if len(prompt) <= 80 else prompt[:77] + "..."
    draw.text((size[0] // 2, size[1] // 2), text, fill=(255, 255, 255), font=font, anchor="mm")
    return _apply_filters(image, edits)
