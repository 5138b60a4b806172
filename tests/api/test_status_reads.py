"""The status route's cheap paths: the token → user cache (its revocation bound) and the Core
read of the results, whose answers equal the ORM path's in every state of an image."""

from datetime import timedelta

from flask_login import login_user
from sqlalchemy import delete, update

from tests.support import ApiClient, create_batch_jobs, create_user, drain
from webapp.auth.token_cache import TokenCache
from webapp.extensions import db
from webapp.generation import presenters
from webapp.models import ApiToken, Generation, GenerationStatus, User, utcnow


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _cached(app, clock):
    cache = TokenCache(app.config["TOKEN_CACHE_SECONDS"], clock)
    app.extensions["batchgen.token_cache"] = cache
    return cache


def test_a_token_revoked_elsewhere_stops_working_within_the_cache_bound(app):
    assert app.config["TOKEN_CACHE_SECONDS"] == 5.0  # the default
    clock = Clock()
    _cached(app, clock)
    user_id, token = create_user(app)
    api = ApiClient(app, user_id, token)
    assert api.get("/api/me").status_code == 200
    with app.app_context():  # another process revokes it: nothing tells this one
        db.session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
        db.session.commit()
    clock.now += 4.9
    assert api.get("/api/me").status_code == 200  # within the bound: still the cached user
    clock.now += 0.2
    assert api.get("/api/me").status_code == 401  # past it: looked up again, gone


def test_a_token_revoked_here_is_refused_at_once_and_zero_turns_the_cache_off(tmp_path):
    from tests.support import make_app
    from webapp.auth import revoke_token, tokens_of

    for seconds in (5.0, 0):
        app = make_app(tmp_path / str(seconds), TOKEN_CACHE_SECONDS=seconds)
        user_id, token = create_user(app)
        api = ApiClient(app, user_id, token)
        assert api.get("/api/me").status_code == 200
        with app.app_context():
            if seconds:
                with app.test_request_context():
                    assert revoke_token(tokens_of(user_id)[0].id)
            else:  # off: a revocation anywhere is seen by the next request
                db.session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
                db.session.commit()
        assert api.get("/api/me").status_code == 401


def test_me_shows_the_balance_now_though_the_user_is_cached(app):
    clock = Clock()
    _cached(app, clock)
    user_id, token = create_user(app, credits=100)
    api = ApiClient(app, user_id, token)
    assert api.get("/api/me").get_json()["credits"] == 100
    create_batch_jobs(api, count=2)  # 2 × 3 credits, within the cache's seconds
    assert api.get("/api/me").get_json()["credits"] == 94


def test_the_core_read_answers_as_the_orm_did_in_every_state(app, api_client):
    clock = Clock()
    _cached(app, clock)
    _, ids = create_batch_jobs(api_client, count=7)
    drain(app)
    now = utcnow()
    states = {
        ids[0]: dict(status=GenerationStatus.PENDING, result_key=None, attempts=0),
        ids[1]: dict(status=GenerationStatus.PROCESSING, result_key=None, attempts=1),
        ids[2]: {},  # success, with its signed imageUrl
        ids[3]: dict(status=GenerationStatus.FAILED, result_key=None, error_code="content_policy",
                     error_message="The prompt was refused"),
        ids[4]: dict(status=GenerationStatus.CANCELLED, result_key=None),
        ids[5]: dict(result_deleted_at=now - timedelta(days=1)),  # deleted by retention
        ids[6]: dict(status=GenerationStatus.PENDING, result_key=None, attempts=1,
                     not_before=now + timedelta(seconds=30)),  # waiting for a retry
    }
    with app.app_context():
        for generation_id, values in states.items():
            if values:
                db.session.execute(
                    update(Generation).where(Generation.id == generation_id).values(**values)
                )
        db.session.commit()
    for asked in ([ids[2], ids[3], ids[4], ids[5]], ids):  # a finished set, then everything
        answer = api_client.get("/api/generate/batch?jobIds=" + ",".join(asked))
        assert answer.status_code == 200
        core = answer.get_json()
        with app.test_request_context():
            login_user(db.session.get(User, api_client.user_id))
            generations = [db.session.get(Generation, generation_id) for generation_id in asked]
            orm = presenters.results_payload(generations[0].batch_id, generations)
        orm = _json(app, orm)
        core_eta, orm_eta = core.pop("eta"), orm.pop("eta")
        assert core == orm
        assert (core_eta is None) == (orm_eta is None)
        if core_eta:
            assert abs(core_eta["seconds"] - orm_eta["seconds"]) <= 1
    assert {r["status"] for r in core["results"]} == {
        "pending", "processing", "success", "failed", "cancelled"
    }


def _json(app, document):
    import json

    return json.loads(app.json.dumps(document))
