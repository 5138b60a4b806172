"""Counting a batch's images: the one per-status query, for one batch or a thousand."""

from tests.support import create_batch_id
from webapp.generation.progress import IDS_PER_QUERY, progress_of


def test_progress_counts_every_batch_asked_for_beyond_one_query_of_ids(app, api_client):
    batch_id = create_batch_id(api_client, 3)
    unknown = [f"batch_0_unknown{i}" for i in range(2 * IDS_PER_QUERY + 7)]

    with app.app_context():
        progress = progress_of([*unknown, batch_id])

    assert (progress[batch_id].total, progress[batch_id].pending) == (3, 3)
    assert progress[batch_id].final_status is None  # nothing has run yet
    assert len(progress) == len(unknown) + 1
    assert progress[unknown[-1]].total == 0
