"""The local engine's image work: prompt → edits → an image of the requested size."""

import io

import pytest
from PIL import Image, ImageDraw

from webapp.providers.imaging import COLORS, parse_edits, render, target_size


def _png(size=(300, 200), background=(120, 140, 160), subject=(200, 30, 30)):
    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).rectangle(
        (width // 3, height // 3, 2 * width // 3, 2 * height // 3), fill=subject
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _open(raw):
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Add white background", {"background": COLORS["white"]}),
        ("put it on a black backdrop", {"background": COLORS["black"]}),
        ("change the background to blue", {"background": COLORS["blue"]}),
        ("remove the background", {"background": COLORS["white"]}),
        ("make it grayscale", {"grayscale": True}),
        ("black and white please", {"grayscale": True}),
        ("blur it", {"blur": True}),
        ("sharpen the photo", {"sharpen": True}),
        ("mirror the image", {"mirror": True}),
        ("rotate 180", {"rotate": 180}),
        ("rotate left", {"rotate": 270}),
        ("rotate by 90 degrees clockwise", {"rotate": 90}),
        ("sepia tone", {"sepia": True}),
    ],
)
def test_prompt_words_become_edits(prompt, expected):
    edits = parse_edits(prompt)
    for name, value in expected.items():
        assert getattr(edits, name) == value


def test_unknown_words_change_nothing():
    assert parse_edits("make it look like a renaissance painting") == parse_edits("")


@pytest.mark.parametrize(
    ("quality", "ratio", "size"),
    [
        ("1k", "1:1", (1024, 1024)),
        ("1k", "16:9", (1024, 576)),
        ("2k", "9:16", (1152, 2048)),
        ("4k", "3:4", (3072, 4096)),
        ("1k", "21:9", (1024, 439)),
    ],
)
def test_target_size_is_long_side_by_quality_at_the_ratio(quality, ratio, size):
    assert target_size(quality, ratio) == size


def test_auto_ratio_keeps_the_source_ratio():
    assert target_size("1k", "auto", (300, 200)) == (1024, 683)


@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "auto"])
def test_render_outputs_a_png_of_the_requested_size(ratio):
    result = _open(render(_png(), "Add white background", "1k", ratio))

    assert result.format == "PNG"
    assert result.size == target_size("1k", ratio, (300, 200))


def test_white_background_replaces_the_backdrop_and_keeps_the_subject():
    result = _open(render(_png(), "Add white background", "1k", "1:1")).convert("RGB")

    width, height = result.size
    assert result.getpixel((5, 5)) == (255, 255, 255)
    assert result.getpixel((width // 2, 20)) == (255, 255, 255)  # padding is white too
    red, green, blue = result.getpixel((width // 2, height // 2))
    assert red > 150 and green < 80 and blue < 80


def test_grayscale_has_no_colour_left():
    result = _open(render(_png(), "grayscale", "1k", "auto")).convert("RGB")

    assert all(r == g == b for r, g, b in result.get_flattened_data())


def test_mirror_swaps_left_and_right():
    image = Image.new("RGB", (200, 100), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 99), fill=(255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    result = _open(render(buffer.getvalue(), "mirror", "1k", "auto")).convert("RGB")

    assert result.getpixel((10, 50))[2] > 200  # blue is now on the left
    assert result.getpixel((1000, 50))[0] > 200


def test_rotate_90_turns_a_landscape_input_into_portrait_content():
    result = _open(render(_png(size=(400, 200)), "rotate 90", "1k", "auto"))

    assert result.size == (512, 1024)


def test_blur_softens_edges():
    sharp = _open(render(_png(), "", "1k", "auto")).convert("L")
    blurred = _open(render(_png(), "blur", "1k", "auto")).convert("L")

    def edge_energy(image):
        pixels = list(image.get_flattened_data())
        return sum(abs(a - b) for a, b in zip(pixels, pixels[1:], strict=False))

    assert edge_energy(blurred) < edge_energy(sharp)


def test_text_to_image_draws_a_canvas_of_the_requested_size():
    result = _open(render(None, "A red poster", "2k", "16:9"))

    assert result.size == (2048, 1152)


def test_the_local_engine_checks_a_stored_inputs_pixels_before_decoding_it():
    """The input was proven at upload, but it is read back from storage: checked again."""
    from webapp.catalog import load_catalog
    from webapp.providers import Failed, GenerationRequest
    from webapp.providers.local import LocalProvider

    request = GenerationRequest(
        generation_id="gen-1",
        model=load_catalog().get("flux-2"),
        mode="i2i",
        prompt="grayscale",
        negative_prompt=None,
        quality="1k",
        aspect_ratio="1:1",
        input_image=_png(size=(40, 30)),
    )

    outcome = LocalProvider(max_pixels=40 * 30 - 1).submit(request)

    assert isinstance(outcome, Failed)
    assert outcome.code == "invalid_input"
    assert "40×30" in outcome.message
    assert LocalProvider(max_pixels=40 * 30).submit(request).extension == "png"
