"""Retake the README's screenshots (docs/*.png) from a running batchgen, in Chromium.

    .venv/bin/flask --app app users create shots --credits 100     # the token: last line
    PORT=7341 .venv/bin/flask --app app serve &
    .venv/bin/python -m devtools.screenshots http://127.0.0.1:7341 "$TOKEN" docs

It makes a batch of three images through the API, then shoots the upload page (three files
chosen) and the finished batch, light and dark, at 1280 and 390 px. Install Debian's
`fonts-noto-color-emoji` first, or ⭐ shows as a box.
"""

import base64
import io
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image, ImageDraw
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
PICTURES = {  # name: (disc, background)
    "red-mug.png": ((200, 30, 30), (235, 235, 235)),
    "blue-sneaker.png": ((20, 90, 200), (200, 200, 200)),
    "green-bottle.png": ((30, 150, 60), (220, 210, 190)),
}
SIZES = {"": {"width": 1280, "height": 860}, "-phone": {"width": 390, "height": 844}}


def picture(disc, background, size=(320, 240)):
    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), disc)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def finished_batch(base, headers, folder):
    """A batch of the three pictures, once it is finished; and the pictures' paths."""
    paths, images = [], []
    for name, colours in PICTURES.items():
        raw = picture(*colours)
        path = folder / name
        path.write_bytes(raw)
        paths.append(str(path))
        data = "data:image/png;base64," + base64.b64encode(raw).decode()
        images.append({"id": name, "data": data})
    body = {"prompt": "Add white background", "model": "flux-2", "images": images}
    created = requests.post(f"{base}/api/generate/batch", headers=headers, json=body).json()
    batch_id = created["batchId"]
    for _ in range(300):
        detail = requests.get(f"{base}/api/generate/batch/{batch_id}", headers=headers).json()
        if detail["isComplete"]:
            return batch_id, paths
        time.sleep(0.2)
    raise SystemExit(f"batch {batch_id} did not finish in a minute")


def main(base, token, out):
    out = Path(out)
    with tempfile.TemporaryDirectory() as folder:
        batch_id, paths = finished_batch(base, {"Authorization": f"Bearer {token}"}, Path(folder))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            for scheme, suffix in (("light", ""), ("dark", "-dark")):
                for tag, viewport in SIZES.items():
                    context = browser.new_context(viewport=viewport, color_scheme=scheme)
                    page = context.new_page()
                    page.goto(f"{base}/login")
                    page.fill("input[name=token]", token)
                    page.press("input[name=token]", "Enter")
                    page.wait_for_load_state("networkidle")
                    page.goto(f"{base}/")
                    page.fill("#prompt", "Add white background")
                    page.set_input_files("#images", paths)
                    page.wait_for_timeout(1200)  # thumbnails checked and drawn, the cost line in
                    page.screenshot(path=out / f"upload-page{tag}{suffix}.png", full_page=not tag)
                    page.goto(f"{base}/batches/{batch_id}")
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=out / f"finished-grid{tag}{suffix}.png", full_page=True)
                    context.close()
            browser.close()
    print(f"wrote {len(SIZES) * 4} screenshots to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
