"""A batch's results as one zip, streamed: each image is sent as soon as it is added."""

import re
import time
import zipfile

from ..models import GenerationStatus

PIECE_BYTES = 64 * 1024  # read from storage and sent on at a time
# A name that starts with its own number (`01-red.png`, `7_cat`, `003 dog`) keeps it alone.
NUMBERED = re.compile(r"\d+(?:[-_. ]|$)")


def archive_name(generation):
    """`03-holiday.png`: the upload position, then the client's name without its extension;
    a name already numbered (`01-red-on-white.png`) is not numbered twice."""
    stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", generation.client_id or generation.id)
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip() or generation.id
    extension = generation.result_key.rsplit(".", 1)[-1]
    if NUMBERED.match(stem):
        return f"{stem}.{extension}"
    return f"{generation.position + 1:02d}-{stem}.{extension}"


def archive_entries(generations):
    """(name in the zip, storage key) of every successful generation's result, each name once:
    a name taken by an earlier entry gets `-2`, `-3`… before its extension."""
    entries, taken = [], set()
    for generation in generations:
        if generation.status != GenerationStatus.SUCCESS or not generation.result_key:
            continue
        name = archive_name(generation)
        stem, dot, extension = name.rpartition(".")
        copy = 1
        while name.lower() in taken:
            copy += 1
            name = f"{stem}-{copy}{dot}{extension}"
        taken.add(name.lower())
        entries.append((name, generation.result_key))
    return entries


class _Chunks:
    """A write-only file that keeps what was written until it is taken.

    It has no tell(), so zipfile treats it as a stream and writes each entry's sizes after its
    data: the archive can go out while it is being made.
    """

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(bytes(data))
        return len(data)

    def flush(self):
        pass

    def take(self):
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def stream_zip(entries, storage, piece_bytes=PIECE_BYTES):
    """The zip's bytes, piece by piece. Results are PNG (already compressed): stored as is.
    Each image is read from storage in pieces and each piece sent on: neither the batch nor one
    whole image is held (on S3, the object streams in as the zip streams out)."""
    chunks = _Chunks()
    with zipfile.ZipFile(chunks, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, key in entries:
            entry = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
            entry.external_attr = 0o600 << 16  # -rw-------, as writestr makes it
            with storage.open(key) as source, archive.open(entry, "w") as target:
                while piece := source.read(piece_bytes):
                    target.write(piece)
                    yield chunks.take()
            yield chunks.take()  # the entry's data descriptor
    yield chunks.take()  # the central directory, written on close
