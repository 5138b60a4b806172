"""GET /api/generate/batch and /api/generate/batch/<id>: progress, results, and privacy."""

import io
from urllib.parse import urlsplit

from PIL import Image

from tests.support import ApiClient, create_batch_jobs, create_user, drain


def test_status_lists_pending_jobs_before_any_work(api_client):
    batch_id, job_ids = create_batch_jobs(api_client)

    response = api_client.get(f"/api/generate/batch?jobIds={','.join(job_ids)}&batchId={batch_id}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["batchId"] == batch_id
    assert [r["generationId"] for r in body["results"]] == job_ids
    assert {r["status"] for r in body["results"]} == {"pending"}
    assert all(r["imageUrl"] is None and r["error"] is None for r in body["results"])
    assert body["summary"] == {
        "total": 2, "pending": 2, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0
    }
    assert body["isComplete"] is False


def test_status_after_the_work_has_signed_image_urls(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client)
    drain(app)

    body = api_client.get(f"/api/generate/batch?jobIds={','.join(job_ids)}").get_json()

    assert body["batchId"] == batch_id  # found from the jobs when not given
    assert body["isComplete"] is True
    assert body["summary"]["completed"] == 2
    for result in body["results"]:
        assert result["status"] == "success"
        url = urlsplit(result["imageUrl"])
        assert url.scheme == "http" and url.netloc == "localhost"
        assert "signature=" in url.query and "expires=" in url.query


def test_image_url_serves_the_real_result_to_a_client_without_cookie(app, api_client):
    _, job_ids = create_batch_jobs(api_client, count=1, aspectRatio="16:9", quality="2k")
    drain(app)
    result = api_client.get(f"/api/generate/batch?jobIds={job_ids[0]}").get_json()["results"][0]
    url = urlsplit(result["imageUrl"])

    with app.test_client().get(f"{url.path}?{url.query}") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        with Image.open(io.BytesIO(response.data)) as image:
            assert image.size == (2048, 1152)


def test_tampered_or_expired_image_links_are_refused(app, api_client):
    _, job_ids = create_batch_jobs(api_client, count=1)
    drain(app)
    result = api_client.get(f"/api/generate/batch?jobIds={job_ids[0]}").get_json()["results"][0]
    url = urlsplit(result["imageUrl"])
    http = app.test_client()

    tampered = http.get(f"{url.path}?{url.query.replace('signature=', 'signature=0')}")
    expired = http.get(f"{url.path}?expires=1000&signature=abc")

    assert tampered.status_code == 403 and tampered.is_json
    assert expired.status_code == 403


def test_batch_detail_has_the_batch_fields_and_results(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client, count=2, negativePrompt="blur", concurrency=1)

    before = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    drain(app)
    after = api_client.get(f"/api/generate/batch/{batch_id}").get_json()

    assert before["status"] == "queued"
    assert before["startedAt"] is None
    assert after["status"] == "completed"
    assert after["batchId"] == batch_id
    assert after["model"] == "flux-2"
    assert after["prompt"] == "Add white background"
    assert after["negativePrompt"] == "blur"
    assert after["quality"] == "1k"
    assert after["aspectRatio"] == "auto"
    assert after["concurrency"] == 1
    assert after["totalCost"] == 6
    assert after["refunded"] == 0
    assert after["engine"] == "local"
    assert after["createdAt"] <= after["startedAt"] <= after["finishedAt"]
    assert [r["generationId"] for r in after["results"]] == job_ids
    assert after["isComplete"] is True


def test_another_users_batch_and_generations_are_not_found(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client)
    mallory = ApiClient(app, *create_user(app, "mallory"))

    by_ids = mallory.get(f"/api/generate/batch?jobIds={job_ids[0]}")
    by_batch = mallory.get(f"/api/generate/batch/{batch_id}")
    with_batch_param = mallory.get(f"/api/generate/batch?jobIds=gen_x&batchId={batch_id}")

    assert by_ids.status_code == 404
    assert by_batch.status_code == 404
    assert with_batch_param.status_code == 404
    assert mallory.balance() == 100 and mallory.ledger() == [("grant", 100)]
    assert api_client.balance() == 94
    unknown = mallory.get("/api/generate/batch?jobIds=gen_doesnotexist")
    assert unknown.status_code == 404
    # A foreign id and an unknown one get the same answer: nothing leaks.
    assert by_ids.get_json()["error"].replace(job_ids[0], "X") == unknown.get_json()[
        "error"
    ].replace("gen_doesnotexist", "X")


def test_mixing_own_and_foreign_ids_is_not_found(app, api_client):
    _, mine = create_batch_jobs(api_client, count=1)
    other = ApiClient(app, *create_user(app, "olga"))
    _, theirs = create_batch_jobs(other, count=1)

    response = api_client.get(f"/api/generate/batch?jobIds={mine[0]},{theirs[0]}")

    assert response.status_code == 404
    assert response.get_json()["notFound"] == [theirs[0]]


def test_job_ids_are_required(api_client):
    response = api_client.get("/api/generate/batch")

    assert response.status_code == 400
    assert response.get_json()["field"] == "jobIds"


def test_status_needs_auth(client):
    assert client.get("/api/generate/batch?jobIds=gen_1").status_code == 401
    assert client.get("/api/generate/batch/batch_1").status_code == 401


def test_unknown_api_route_answers_json(api_client):
    response = api_client.get("/api/nothing-here")

    assert response.status_code == 404
    assert response.is_json


def test_wrong_method_answers_json(api_client):
    response = api_client.http.delete("/api/generate/batch")

    assert response.status_code == 405
    assert response.is_json


def test_an_unexpected_error_answers_json_500_without_a_stack_trace(app, api_client):
    def broken():
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/broken", "broken", broken)

    response = api_client.get("/api/broken")

    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error; it has been logged."}
