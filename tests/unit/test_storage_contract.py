"""The storage contract, run on every storage: the local folder and a real S3-compatible server
(moto's, started by the tests; or the one TEST_S3_URL names). What the service relies on:
what is saved reads back, a missing image is FileNotFoundError, any other failure is
StorageUnavailable, keys are checked, and the zip of a batch streams without holding it."""

import hashlib
import io
import os
import tracemalloc
import zipfile

import pytest

from tests.support import free_port
from webapp.storage import LocalStorage, StorageUnavailable
from webapp.storage.s3 import S3Storage
from webapp.web.archive import stream_zip

KEY = "results/batch_1/gen_1.png"
BAD_KEYS = ["../secret.png", ".partial/part-old", "/results/x.png", "results//x.png", "a.png?x=1"]


@pytest.fixture(params=["local", "s3"])
def kind(request):
    return request.param


@pytest.fixture
def storage(kind, tmp_path, request):
    if kind == "local":
        return LocalStorage(tmp_path / "media")
    place = request.getfixturevalue("s3_place")
    return S3Storage(place.bucket, request.getfixturevalue("s3_prefix"), place.endpoint_url)


@pytest.fixture
def broken_storage(kind, tmp_path, request):
    """The same storage in an outage: a folder that cannot be written or read (a file stands
    where it belongs), a server nobody answers for."""
    if kind == "local":
        (tmp_path / "blocker").write_text("not a folder")
        return LocalStorage(tmp_path / "blocker" / "media")
    place = request.getfixturevalue("s3_place")
    return S3Storage(
        place.bucket, "outage/", f"http://127.0.0.1:{free_port()}", max_attempts=1
    )


def test_what_is_saved_reads_back_whole_and_in_pieces(storage):
    data = os.urandom(300_000)

    assert storage.save(KEY, data) == KEY

    assert storage.read(KEY) == data
    assert storage.exists(KEY)
    with storage.open(KEY) as stored:
        pieces = [stored.read(65_536) for _ in range(5)]
        assert stored.read(65_536) == b""
    assert b"".join(pieces) == data


def test_a_second_save_replaces_the_first(storage):
    storage.save(KEY, b"first")
    storage.save(KEY, b"second, longer")

    assert storage.read(KEY) == b"second, longer"


def test_a_missing_image_is_file_not_found(storage):
    with pytest.raises(FileNotFoundError):
        storage.read("inputs/batch_1/nothing.png")
    with pytest.raises(FileNotFoundError):
        storage.open("inputs/batch_1/nothing.png")
    assert not storage.exists("inputs/batch_1/nothing.png")


def test_delete_removes_the_image_and_a_missing_one_is_no_error(storage):
    storage.save(KEY, b"image")
    storage.save("results/batch_1/gen_2.png", b"another")

    storage.delete(KEY)
    storage.delete(KEY)

    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.read(KEY)
    assert storage.read("results/batch_1/gen_2.png") == b"another"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_outside_the_pattern_are_refused(storage, key):
    for operation in (storage.read, storage.open, storage.exists, storage.delete):
        with pytest.raises(ValueError):
            operation(key)
    with pytest.raises(ValueError):
        storage.save(key, b"x")


def test_a_working_storage_passes_its_check_and_has_no_partials(storage):
    storage.check()

    assert storage.sweep_partials() == 0


def test_an_outage_is_storage_unavailable_never_a_missing_file(broken_storage):
    operations = {
        "save": lambda: broken_storage.save(KEY, b"image"),
        "read": lambda: broken_storage.read(KEY),
        "open": lambda: broken_storage.open(KEY),
        "check": broken_storage.check,
    }
    for name, operation in operations.items():
        with pytest.raises(StorageUnavailable) as failure:
            operation()
        assert not isinstance(failure.value, FileNotFoundError), name


def test_a_batch_zip_holds_every_entry_as_stored(storage):
    images = {f"results/batch_1/gen_{i}.png": os.urandom(100_000 + i) for i in range(3)}
    for key, data in images.items():
        storage.save(key, data)
    entries = [(f"{i + 1:02d}-image.png", key) for i, key in enumerate(images)]

    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(entries, storage))))

    assert archive.testzip() is None
    assert archive.namelist() == ["01-image.png", "02-image.png", "03-image.png"]
    for name, key in entries:
        assert archive.read(name) == images[key]
        assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED


def test_a_zip_of_50_results_streams_with_bounded_memory(storage, tmp_path):
    """50 results of 1 MiB (50 MiB in all) go out with a peak below one of them: no image, let
    alone the batch, is ever held whole."""
    size, count = 2**20, 50
    digests = {}
    for i in range(count):
        data = os.urandom(size)
        key = f"results/batch_1/gen_{i:02d}.png"
        storage.save(key, data)
        digests[f"{i + 1:02d}.png"] = hashlib.sha256(data).hexdigest()
    entries = [(name, f"results/batch_1/gen_{i:02d}.png") for i, name in enumerate(digests)]
    path = tmp_path / "batch.zip"

    tracemalloc.start()
    try:
        with open(path, "wb") as out:
            for piece in stream_zip(entries, storage):
                out.write(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < size, f"peak {peak:,} bytes"
    with zipfile.ZipFile(path) as archive:
        assert {
            name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()
        } == digests
