"""Outages: a storage that cannot write is an outcome of its own, never a stuck image; a
database out of reach answers 503 with Retry-After, not a 500."""

import os
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.contract import ContractClient
from tests.support import (
    app_config,
    claim_next_image,
    create_batch_id,
    finish_claim,
    generation_rows,
    image_bytes,
)
from webapp import create_app
from webapp.extensions import db
from webapp.models import Generation, utcnow


@pytest.fixture
def app(tmp_path, database_url):
    from tests.support import make_app

    return make_app(tmp_path, database_url, MAX_ATTEMPTS=2)


def _break_result_storage(app):
    """Results cannot be written: where their folder belongs stands a file (root ignores
    permissions, a file in the way stops anyone)."""
    root = app.config["MEDIA_ROOT"]
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "results"), "w") as blocker:
        blocker.write("not a folder")


def _backoff_over(app, batch_id):
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.batch_id == batch_id)
            .values(not_before=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()


def test_a_result_that_cannot_be_stored_is_retried_then_failed_and_refunded_once(
    app, api_client
):
    batch_id = create_batch_id(api_client, 1)
    _break_result_storage(app)

    finish_claim(app, claim_next_image(app, batch_id))

    [row] = generation_rows(app, batch_id)
    assert row["status"] == "pending"  # the lease was given back at once, not waited out
    assert row["error_code"] == "storage_unavailable"
    assert row["attempts"] == 1
    assert api_client.balance() == 97

    _backoff_over(app, batch_id)
    finish_claim(app, claim_next_image(app, batch_id))

    [row] = generation_rows(app, batch_id)
    assert row["status"] == "failed"
    assert row["error_code"] == "storage_unavailable"
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    error = detail["results"][0]["error"]
    assert "storage could not store the finished image" in error
    assert "Gave up after 2 attempts" in error
    assert detail["status"] == "failed"
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3), ("refund", 3)]


def test_an_input_that_cannot_be_read_is_a_storage_outcome_too(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    root = app.config["MEDIA_ROOT"]
    inputs = os.path.join(root, "inputs", batch_id)
    for name in os.listdir(inputs):  # a folder where the file was: reading it fails
        path = os.path.join(inputs, name)
        os.unlink(path)
        os.makedirs(path)

    finish_claim(app, claim_next_image(app, batch_id))

    [row] = generation_rows(app, batch_id)
    assert (row["status"], row["error_code"]) == ("pending", "storage_unavailable")


@pytest.fixture
def unreachable_database_app(tmp_path):
    """An app whose PostgreSQL does not answer (nothing listens on port 9)."""
    config = app_config(
        tmp_path, SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:9/test"
    )
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"connect_timeout": 2}}
    app = create_app(config, instance_path=str(tmp_path))
    app.test_client_class = ContractClient  # its 503s are checked against the contract too
    return app


def test_a_database_out_of_reach_answers_503_json_with_retry_after(unreachable_database_app):
    client = unreachable_database_app.test_client()

    for response in (
        client.get("/api/me", headers={"Authorization": "Bearer bg_anything"}),
        client.get("/api/generate/batch?jobIds=gen_1", headers={"Authorization": "Bearer bg_x"}),
    ):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "database cannot be reached" in response.get_json()["error"]


def test_a_database_out_of_reach_shows_people_a_page_to_try_again(unreachable_database_app):
    client = unreachable_database_app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1"  # someone signed in: loading them needs the database

    response = client.get("/batches")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "Try again shortly" in response.get_data(as_text=True)


def test_images_helper_makes_pngs():
    assert image_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_batch_whose_inputs_cannot_be_stored_answers_503_and_charges_nothing(app, api_client):
    root = app.config["MEDIA_ROOT"]
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "inputs"), "w") as blocker:
        blocker.write("not a folder")

    from tests.support import batch_body

    response = api_client.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "image storage cannot be reached" in response.get_json()["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]


def test_a_stored_image_that_cannot_be_read_answers_503_not_500(app, api_client):
    from urllib.parse import urlsplit

    from tests.support import drain

    batch_id = create_batch_id(api_client, 1)
    drain(app)
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    link = urlsplit(detail["results"][0]["imageUrl"])
    stored = os.path.join(app.config["MEDIA_ROOT"], *link.path.split("/")[2:])
    os.unlink(stored)
    os.makedirs(stored)  # a folder where the image was: reading it fails

    response = app.test_client().get(f"{link.path}?{link.query}")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
