"""Hostile input: every malformed request, whatever its shape, gets a 4xx JSON that says what is
wrong, costs nothing, keeps no file and writes no row; and a body of any shape stays small."""

import base64
import io
import json
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.support import batch_body, data_url, image_bytes, media_files, png_data_url
from webapp.extensions import db
from webapp.models import Batch, Generation


def assert_refused(app, api_client, response, status=400):
    """A 4xx JSON answer with an error sentence, and nothing charged, stored or written."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()
    assert isinstance(error["error"], str) and error["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]
    assert media_files(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 0
        assert db.session.scalar(select(func.count()).select_from(Generation)) == 0
    return error


def post_raw(api_client, body, content_type="application/json"):
    return api_client.post("/api/generate/batch", data=body, content_type=content_type)


def _png_chunks(raw):
    """(type, data) of every chunk of a PNG."""
    chunks, offset = [], 8
    while offset < len(raw):
        (length,) = struct.unpack(">I", raw[offset : offset + 4])
        kind = raw[offset + 4 : offset + 8]
        chunks.append((kind, raw[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _png_from_chunks(chunks):
    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    return out


def corrupt_inside_png():
    """Every chunk's CRC valid, the compressed pixels not."""
    chunks = _png_chunks(image_bytes("PNG", size=(64, 48)))
    broken = []
    for kind, data in chunks:
        if kind == b"IDAT":
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        broken.append((kind, data))
    return _png_from_chunks(broken)


def webp_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buffer, "WEBP")
    return buffer.getvalue()


def b64(raw):
    return base64.b64encode(raw).decode()


PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG")

MALFORMED_BODIES = {
    "unclosed object": b'{"prompt": "x"',
    "unclosed array": b"[",
    "missing value": b'{"prompt": }',
    "single quotes": b"{'prompt': 'x'}",
    "bare word": b"nul",
    "trailing comma": b'{"prompt": "x",}',
    "a NUL byte": b"\x00",
    "two values": b"{} {}",
    "comment": b'{"prompt": "x" /* hi */}',
    "empty": b"",
    "only spaces": b"   ",
    "NaN": b'{"concurrency": NaN}',
    "raw invalid UTF-8": b'{"prompt": "\xff\xfe"}',
    "nesting 33 arrays": b"[" * 33 + b"]" * 33,
    "nesting 40 objects": b'{"a": ' * 40 + b"1" + b"}" * 40,
    "nesting 8000 arrays": b"[" * 8000 + b"]" * 8000,
    "nesting 100000 unclosed": b"[" * 100_000,
    "images nested too deep": b'{"images": ' + b"[" * 40 + b"]" * 40 + b"}",
    "lone low surrogate": b'{"prompt": "\\udfff", "model": "flux-2", "images": []}',
    "lone high surrogate in an id": b'{"images": [{"id": "\\ud800", "data": ""}]}',
    "duplicate key": b'{"prompt": "a", "prompt": "b", "model": "flux-2", "images": []}',
    "duplicate key in an image": b'{"images": [{"id": "a", "id": "b"}]}',
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_a_body_that_is_not_one_sound_json_value_is_a_400_that_says_why(app, api_client, body):
    error = assert_refused(app, api_client, post_raw(api_client, body))
    assert error["field"]
    assert "\n" not in error["error"]


def test_a_lone_surrogate_names_the_field_it_is_in(app, api_client):
    body = b'{"model": "flux-2", "images": [{"id": "ok", "data": "x"}, {"id": "\\udc00"}]}'
    error = assert_refused(app, api_client, post_raw(api_client, body))
    assert error["field"] == "images[1].id"
    assert "surrogate" in error["error"]


def test_a_key_given_twice_is_named(app, api_client):
    error = assert_refused(app, api_client, post_raw(api_client, b'{"prompt": 1, "prompt": 2}'))
    assert error["field"] == "prompt"
    assert "twice" in error["error"]


def test_too_deep_a_body_is_refused_at_once_within_a_few_megabytes(app, api_client):
    """16 KB of `[` then `]` took a worker to 154 MB when the parser kept a prefix per level."""
    body = b"[" * 8000 + b"]" * 8000
    tracemalloc.start()
    try:
        response = post_raw(api_client, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = assert_refused(app, api_client, response)
    assert "deeper than 32 levels" in error["error"]
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"


WRONG_FIELDS = {
    "prompt a number": {"prompt": 1},
    "prompt null": {"prompt": None},
    "prompt a list": {"prompt": ["a"]},
    "prompt an object": {"prompt": {"text": "a"}},
    "prompt empty": {"prompt": ""},
    "prompt spaces": {"prompt": "   "},
    "prompt too long": {"prompt": "x" * 4001},
    "prompt true": {"prompt": True},
    "model a number": {"model": 2},
    "model null": {"model": None},
    "model unknown": {"model": "flux-9"},
    "model with traversal": {"model": "../../etc/passwd"},
    "model in capitals": {"model": "FLUX-2"},
    "quality unknown": {"quality": "8k"},
    "quality a number": {"quality": 1},
    "aspect ratio unknown": {"aspectRatio": "1:7"},
    "aspect ratio a number": {"aspectRatio": 1.5},
    "negative prompt a number": {"negativePrompt": 5},
    "negative prompt too long": {"negativePrompt": "x" * 4001},
    "concurrency a string": {"concurrency": "4"},
    "concurrency zero": {"concurrency": 0},
    "concurrency negative": {"concurrency": -1},
    "concurrency true": {"concurrency": True},
    "concurrency a float": {"concurrency": 1.5},
    "images null": {"images": None},
    "images a string": {"images": "img"},
    "images an object": {"images": {"id": "a"}},
    "images empty": {"images": []},
    "images of numbers": {"images": [1]},
    "images of nulls": {"images": [None]},
    "images of lists": {"images": [["a", "b"]]},
    "image id a float": {"images": [{"id": 1.5, "data": png_data_url()}]},
    "image id empty": {"images": [{"id": "", "data": png_data_url()}]},
    "image id missing": {"images": [{"data": png_data_url()}]},
    "image id too long": {"images": [{"id": "x" * 201, "data": png_data_url()}]},
    "image ids repeated": {
        "images": [{"id": "a", "data": png_data_url()}, {"id": "a", "data": png_data_url()}]
    },
    "image data missing": {"images": [{"id": "a"}]},
    "image data a number": {"images": [{"id": "a", "data": 7}]},
    "image data empty": {"images": [{"id": "a", "data": ""}]},
    "image data a bare base64": {"images": [{"id": "a", "data": b64(PNG)}]},
    "image data with no bytes": {"images": [{"id": "a", "data": "data:image/png;base64,"}]},
    "image data not base64": {"images": [{"id": "a", "data": "data:image/png;base64,@@@@"}]},
    "image data a GIF": {"images": [{"id": "a", "data": "data:image/gif;base64," + b64(PNG)}]},
    "image data HTML": {
        "images": [{"id": "a", "data": "data:text/html;base64," + b64(b"<script>1</script>")}]
    },
    "HTML called a PNG": {
        "images": [{"id": "a", "data": data_url(b"<html><script>alert(1)</script></html>")}]
    },
    "SVG called a PNG": {
        "images": [{"id": "a", "data": data_url(b'<svg xmlns="http://www.w3.org/2000/svg"/>')}]
    },
    "a JPEG called a PNG": {"images": [{"id": "a", "data": data_url(JPEG, "png")}]},
    "a PNG called a JPEG": {"images": [{"id": "a", "data": data_url(PNG, "jpeg")}]},
    "a truncated PNG": {"images": [{"id": "a", "data": data_url(PNG[: len(PNG) // 2])}]},
    "a truncated JPEG": {"images": [{"id": "a", "data": data_url(JPEG[:-200], "jpeg")}]},
    "a PNG corrupt inside": {"images": [{"id": "a", "data": data_url(corrupt_inside_png())}]},
    "a PNG with an HTML tail": {
        "images": [{"id": "a", "data": data_url(PNG + b"<script>alert(1)</script>")}]
    },
    "a WebP with a tail": {
        "images": [{"id": "a", "data": data_url(webp_bytes() + b"tail", "webp")}]
    },
    "prompt with a NUL": {"prompt": "white\u0000background"},
    "prompt with a bell": {"prompt": "white\u0007background"},
    "negative prompt with a NUL": {"negativePrompt": "blur\u0000"},
    "image id with a NUL": {"images": [{"id": "a\u0000b", "data": png_data_url()}]},
    "image id with a line break": {"images": [{"id": "a\nb", "data": png_data_url()}]},
    "51 images": {"images": [{"id": f"i{n}", "data": png_data_url()} for n in range(51)]},
}


@pytest.mark.parametrize("fields", WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_a_wrong_field_is_a_400_naming_it(app, api_client, fields):
    response = api_client.post("/api/generate/batch", json=batch_body(1, **fields))
    error = assert_refused(app, api_client, response)
    assert error["field"].split("[")[0].split(".")[0] in {*fields, "body"}


@pytest.mark.parametrize("root", [[], "batch", 1, None, True, [batch_body(1)]])
def test_a_body_that_is_not_an_object_is_a_400(app, api_client, root):
    assert_refused(app, api_client, post_raw(api_client, json.dumps(root).encode()))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_json_sent_as_another_content_type_is_a_400(app, api_client, content_type):
    body = json.dumps(batch_body(1)).encode()
    error = assert_refused(app, api_client, post_raw(api_client, body, content_type))
    assert error["field"] == "body"


def test_a_png_with_a_tail_is_refused_saying_how_much_follows_it(app, api_client):
    tail = b"<html><script>alert(1)</script></html>"
    body = batch_body(1, images=[{"id": "a", "data": data_url(PNG + tail)}])
    error = assert_refused(app, api_client, api_client.post("/api/generate/batch", json=body))
    assert f"{len(tail)} bytes after the end of its PNG image" in error["error"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "jobIds=",
        "jobIds=,,,",
        "jobIds=" + ",".join(f"gen_{n}" for n in range(201)),
        "jobIds=gen_unknown",
        "jobIds=../../etc/passwd",
        "jobIds=gen_1&batchId=batch_unknown",
        "jobIds=%00",
        "jobIds=" + "x" * 5000,
    ],
)
def test_a_poll_of_any_wrong_shape_is_a_4xx_json(app, api_client, query):
    response = api_client.get(f"/api/generate/batch?{query}")
    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]


@pytest.mark.parametrize(
    "signature",
    ["é", "\u202e", "%ff", "0" * 64, "", "x" * 10_000],
)
def test_a_tampered_media_link_is_a_403_json(client, signature):
    response = client.get(
        "/media/results/b/g.png", query_string={"expires": "99999999999", "signature": signature}
    )
    assert response.status_code == 403
    assert response.get_json()["error"]


@pytest.mark.parametrize("expires", ["²", "1e9", "-1", "9" * 5000, ""])
def test_a_media_link_with_an_odd_expiry_is_a_403_json(client, expires):
    response = client.get(
        "/media/results/b/g.png", query_string={"expires": expires, "signature": "0" * 64}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("path", ["batch_%00", "%00", "batch_x%0d%0a", "a" * 300, "..%2f..%2fetc"])
def test_a_batch_path_that_is_no_id_of_ours_is_a_404_json(api_client, path):
    for response in (
        api_client.get(f"/api/generate/batch/{path}"),
        api_client.post(f"/api/generate/batch/{path}/cancel"),
        api_client.get(f"/api/generate/batch?jobIds=gen_1&batchId={path}"),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"]


def test_a_prompt_with_tabs_and_line_breaks_is_accepted(api_client):
    body = batch_body(1, prompt="Add a white\tbackground,\r\nthen sharpen")
    assert api_client.post("/api/generate/batch", json=body).status_code == 200


CALLBACKS = {
    "nested 5000 deep": b'{"data": ' * 5000 + b"{}" + b"}" * 5000,
    "a lone surrogate": b'{"data": {"taskId": "\\udfff"}}',
    "a NUL in the task id": b'{"data": {"taskId": "abc\\u0000"}}',
    "a task id of 500 characters": json.dumps({"taskId": "t" * 500}).encode(),
    "not JSON": b"taskId=abc",
    "a task id that is a number": b'{"taskId": 42}',
}


@pytest.mark.parametrize("body", CALLBACKS.values(), ids=CALLBACKS.keys())
def test_a_malformed_kie_callback_is_a_400_json(client, body):
    response = client.post("/api/callbacks/kie", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]


def _png_header_only(width, height):
    """A PNG whose header claims width × height, with no real pixels: refused on the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _png_from_chunks([(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0")), (b"IEND", b"")])


@pytest.mark.parametrize(
    ("width", "height"), [(8000, 6000), (100_000, 100_000), (2**31 - 1, 2**31 - 1)]
)
def test_a_pixel_bomb_is_refused_on_its_header(app, api_client, width, height):
    body = batch_body(1, images=[{"id": "bomb", "data": data_url(_png_header_only(width, height))}])
    error = assert_refused(app, api_client, api_client.post("/api/generate/batch", json=body))
    assert "too many pixels" in error["error"]


def _image(fmt, mode="RGB", size=(48, 32), **save):
    image = Image.new(mode, size, 120 if mode in ("L", "I;16", "P") else (200, 30, 30)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def _exif_rotated_jpeg():
    image = Image.new("RGB", (48, 32), (10, 120, 200))
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def _apng():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


ODD_BUT_REAL = {
    "CMYK JPEG": ("jpeg", _image("JPEG", "CMYK")),
    "16-bit grey PNG": ("png", _image("PNG", "I;16")),
    "palette PNG": ("png", _image("PNG", "P")),
    "grey JPEG": ("jpeg", _image("JPEG", "L")),
    "RGBA WebP": ("webp", _image("WEBP", "RGBA")),
    "EXIF-rotated JPEG": ("jpeg", _exif_rotated_jpeg()),
    "animated PNG": ("png", _apng()),
    "1×1 PNG": ("png", _image("PNG", size=(1, 1))),
    "20000×1 PNG": ("png", _image("PNG", size=(20000, 1))),
}


@pytest.mark.parametrize(("kind", "raw"), ODD_BUT_REAL.values(), ids=ODD_BUT_REAL.keys())
def test_an_odd_but_real_image_is_accepted_and_charged_once(app, api_client, kind, raw):
    body = batch_body(1, images=[{"id": "odd", "data": data_url(raw, kind)}])

    response = api_client.post("/api/generate/batch", json=body)

    assert response.status_code == 200, response.get_json()
    assert api_client.balance() == 97
    assert len(media_files(app)) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/generate/batch"),
        ("DELETE", "/api/generate/batch"),
        ("GET", "/api/generate/photo"),
        ("GET", "/api/generate/batch/batch_1/cancel"),
        ("POST", "/api/me"),
        ("PATCH", "/api/models"),
        ("GET", "/api/callbacks/kie"),
    ],
)
def test_the_wrong_method_is_a_405_json(app, api_client, method, path):
    response = api_client.http.open(path, method=method, headers=api_client._headers(None))
    assert response.status_code == 405
    assert response.get_json()["error"]
    assert api_client.balance() == 100


def test_a_string_longer_than_any_image_is_refused_as_it_streams_in(app, api_client):
    from webapp.api import longest_string

    longest = longest_string(app)
    body = b'{"prompt": "' + b"x" * (longest + 1) + b'"}'

    error = assert_refused(app, api_client, post_raw(api_client, body))

    assert f"longer than {longest:,} bytes" in error["error"]


def test_a_body_of_very_many_values_is_refused_at_the_limit(app, api_client):
    body = b"[" + b"0," * 20_000 + b"0]"

    error = assert_refused(app, api_client, post_raw(api_client, body))

    assert "more than 10,000 values" in error["error"]


def test_a_callback_string_is_bounded_too(client):
    body = b'{"taskId": "' + b"t" * 70_000 + b'"}'

    response = client.post("/api/callbacks/kie", data=body, content_type="application/json")

    assert response.status_code == 400
    assert "longer than 65,536 bytes" in response.get_json()["error"]


def test_a_whole_batch_of_images_is_not_mistaken_for_a_long_string(api_client):
    body = batch_body(3)  # each data URL is its own string, well under the limit

    assert post_raw(api_client, json.dumps(body).encode()).status_code == 200


def _chunked(api_client, body):
    """POST `body` with no Content-Length, as a chunked upload arrives (the server has
    de-chunked it and marks the stream as ending by itself)."""
    return api_client.post(
        "/api/generate/batch",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_batch_is_read_to_its_end(api_client):
    response = _chunked(api_client, json.dumps(batch_body(1)).encode())

    assert response.status_code == 200, response.get_json()
    assert api_client.balance() == 97


@pytest.mark.parametrize(
    "body",
    [b"[" * 5000 + b"]" * 5000, b'{"prompt": "' + b"x" * (3 * 2**20), b'{"prompt": "x"'],
    ids=["nested", "an unterminated string", "cut short"],
)
def test_a_hostile_chunked_body_is_a_400_like_any_other(app, api_client, body):
    assert_refused(app, api_client, _chunked(api_client, body))
