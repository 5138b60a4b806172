"""The ETags of the API's status routes, told from the request alone (generation/etags.py):
`conditional_get` (webapp/conditional.py) answers 304 on a match without calling the view."""

from flask import request
from flask_login import current_user

from ..generation import etags
from ..models import looks_like_id


def listed_job_ids():
    """The jobIds of the request, as GET /api/generate/batch reads them (unique, in order)."""
    raw_ids = request.args.get("jobIds", "")
    return list(dict.fromkeys(part.strip() for part in raw_ids.split(",") if part.strip()))


def jobs_tag():
    from . import MAX_JOB_IDS  # the route's own bound: a longer list is its 400, untagged

    job_ids = listed_job_ids()
    if not job_ids or len(job_ids) > MAX_JOB_IDS or not all(map(looks_like_id, job_ids)):
        return None  # the route's 400
    return etags.jobs_tag(current_user.id, job_ids, request.args.get("batchId") or None)


def batch_tag(batch_id):
    return etags.batch_tag(current_user.id, batch_id)
