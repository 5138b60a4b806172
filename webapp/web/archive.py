"""Pack a batch's results into one zip file for download."""

import re
import tempfile
import zipfile

from ..models import GenerationStatus

# Results are PNG (already compressed): store them, don't deflate them again.
SPOOL_BYTES = 64 * 1024 * 1024


def archive_name(generation):
    """`03-holiday.png`: the upload position, then the client's name without its extension."""
    stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", generation.client_id or generation.id)
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip() or generation.id
    extension = generation.result_key.rsplit(".", 1)[-1]
    return f"{generation.position + 1:02d}-{stem}.{extension}"


def results_archive(generations, storage):
    """A file object holding a zip of every successful generation's result."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        for generation in generations:
            if generation.status == GenerationStatus.SUCCESS and generation.result_key:
                archive.writestr(archive_name(generation), storage.read(generation.result_key))
    spool.seek(0)
    return spool
