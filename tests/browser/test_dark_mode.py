"""Dark mode through prefers-color-scheme: the upload page, a finished batch and the history are
dark with light text when the system asks for dark, and as they were when it asks for light;
every text sampled keeps 4.5:1 against the ground it is painted on, in both schemes.

A screenshot of the finished batch in dark is saved to TEST_ARTIFACTS."""

import re

import pytest

from tests.browser.test_demanding_pages import finished
from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    ARTIFACTS,
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The body's colours, and for each text element of `selector` (not a disabled control, which AA
# exempts) its colour and the first background that is not transparent, up to the page.
COLOURS = """selector => {
    const ground = el => {
        for (; el; el = el.parentElement) {
            const bg = getComputedStyle(el).backgroundColor;
            if (!/rgba\\(.*, 0\\)$/.test(bg) && bg !== 'transparent') return bg;
        }
        return getComputedStyle(document.documentElement).backgroundColor;
    };
    const texts = [...document.querySelectorAll(selector)]
        .filter(el => el.getClientRects().length && el.textContent.trim() && !el.disabled)
        .map(el => ({what: el.tagName + '.' + el.className, color: getComputedStyle(el).color,
                     ground: ground(el)}));
    const body = getComputedStyle(document.body);
    return {background: body.backgroundColor, color: body.color, texts};
}"""
TEXTS = "main h1, main p, main label, main a, main button, main td, main th, main dt, main dd, .status, .badge, .hint, select, input[type=search], textarea"  # noqa: E501
# What the light scheme was before dark mode came: the page's ground and ink.
LIGHT_PAGE, LIGHT_INK = (249, 250, 251), (31, 41, 55)


def rgb(text):
    return tuple(int(part) for part in re.findall(r"[\d.]+", text)[:3])


def luminance(colour):
    def channel(value):
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(value) for value in colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(one, other):
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.fixture
def finished_batch(live_server):  # noqa: F811
    app, base = live_server
    user_id, token = create_user(app, "dora", credits=100)
    client = ApiClient(app, user_id, token)
    batch_id = client.post("/api/generate/batch", json=batch_body(2)).get_json()["batchId"]
    finished(client, batch_id)
    return app, base, user_id, batch_id


def colours_of(chromium, app, base, user_id, scheme, pages, screenshot=None):  # noqa: F811
    """{path: the page's COLOURS} in a browser whose system asks for `scheme`."""
    context = chromium.new_context(color_scheme=scheme, viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base, user_id)
    seen = {}
    for path in pages:
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        seen[path] = page.evaluate(COLOURS, TEXTS)
        if screenshot and path == screenshot[0]:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot[1]), full_page=True)
    context.close()
    assert errors == []
    return seen


def poor_contrast(colours):
    return [
        (
            text["what"],
            text["color"],
            text["ground"],
            round(contrast(rgb(text["color"]), rgb(text["ground"])), 2),
        )
        for text in colours["texts"]
        if contrast(rgb(text["color"]), rgb(text["ground"])) < 4.5
    ]


def test_dark_scheme_paints_dark_grounds_and_light_text(chromium, finished_batch):  # noqa: F811
    app, base, user_id, batch_id = finished_batch
    pages = ["/", f"/batches/{batch_id}", "/batches"]

    dark = colours_of(
        chromium,
        app,
        base,
        user_id,
        "dark",
        pages,
        screenshot=(f"/batches/{batch_id}", "finished-batch-dark.png"),
    )

    for path, colours in dark.items():
        background, ink = rgb(colours["background"]), rgb(colours["color"])
        assert luminance(background) < 0.05, (path, colours["background"])
        assert luminance(ink) > 0.6, (path, colours["color"])
        assert len(colours["texts"]) > 5, path
        assert poor_contrast(colours) == [], path
        # No surface stays white: every sampled text sits on a dark ground, but for filled
        # buttons, light (the accent) with dark text.
        light_grounds = [
            t
            for t in colours["texts"]
            if luminance(rgb(t["ground"])) >= 0.2 and not re.match(r"BUTTON|A\.button", t["what"])
        ]
        assert light_grounds == [], path
    assert (ARTIFACTS / "finished-batch-dark.png").stat().st_size > 10_000


def test_light_scheme_stays_as_it_was(chromium, finished_batch):  # noqa: F811
    app, base, user_id, batch_id = finished_batch
    pages = ["/", f"/batches/{batch_id}", "/batches"]

    light = colours_of(chromium, app, base, user_id, "light", pages)

    for path, colours in light.items():
        assert rgb(colours["background"]) == LIGHT_PAGE, path
        assert rgb(colours["color"]) == LIGHT_INK, path
        assert poor_contrast(colours) == [], path
