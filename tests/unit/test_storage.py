"""Local storage: atomic writes, and the parts a killed writer leaves behind are swept."""

import os
import time

import pytest

from webapp.storage import LocalStorage


def test_a_write_is_atomic_and_leaves_no_part_behind(tmp_path):
    storage = LocalStorage(tmp_path)

    storage.save("results/batch_1/gen_1.png", b"image")

    assert storage.read("results/batch_1/gen_1.png") == b"image"
    assert os.listdir(storage.partials) == []


def test_parts_of_killed_writers_are_swept_once_old(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.save("results/batch_1/gen_1.png", b"image")
    old_part = os.path.join(storage.partials, "part-old")
    new_part = os.path.join(storage.partials, "part-new")
    for path in (old_part, new_part):
        with open(path, "wb") as handle:
            handle.write(b"half an ima")
    two_hours_ago = time.time() - 7200
    os.utime(old_part, (two_hours_ago, two_hours_ago))

    assert storage.sweep_partials(older_than_seconds=3600) == 1

    assert os.listdir(storage.partials) == ["part-new"]  # a writer may still be on it
    assert storage.read("results/batch_1/gen_1.png") == b"image"


def test_sweeping_an_untouched_folder_finds_nothing(tmp_path):
    assert LocalStorage(tmp_path / "media").sweep_partials() == 0


def test_parts_are_never_served_as_keys(tmp_path):
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).path(".partial/part-old")
