"""What only the S3 storage does: STORAGE_URL, presigned links that keep sign()'s expiry and are
botocore's own signatures, fetched with plain requests; big writes in parts that are never seen
half done; stale uploads swept; bounded calls; links through /media when S3_LINKS=proxy."""

import socket
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import pytest
import requests
from botocore.exceptions import EndpointConnectionError

from tests.support import make_app
from webapp.storage import LocalStorage, StorageUnavailable, create_storage, sign
from webapp.storage.s3 import S3Storage, parse_url
from webapp.storage.views import signed_url

KEY = "results/batch_1/gen_1.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"not really, but typed so" * 10


@pytest.fixture
def storage(s3_place, s3_prefix):
    return S3Storage(s3_place.bucket, s3_prefix, s3_place.endpoint_url)


def _config(**settings):
    return {
        "MEDIA_ROOT": "/srv/media",
        "STORAGE_URL": None,
        "S3_ENDPOINT_URL": None,
        "S3_REGION": None,
        "S3_LINKS": "presigned",
        "S3_TIMEOUT_SECONDS": 5.0,
        "S3_MAX_ATTEMPTS": 3,
        **settings,
    }


def test_storage_url_picks_the_storage():
    for url in (None, "", "file://"):
        chosen = create_storage(_config(STORAGE_URL=url))
        assert isinstance(chosen, LocalStorage) and chosen.root == "/srv/media"
    assert create_storage(_config(STORAGE_URL="file:///data/images")).root == "/data/images"

    chosen = create_storage(_config(STORAGE_URL="s3://images/batchgen/prod", S3_LINKS="proxy"))

    assert isinstance(chosen, S3Storage)
    assert (chosen.bucket, chosen.prefix, chosen.links) == ("images", "batchgen/prod/", "proxy")
    assert parse_url("s3://images") == ("images", "")
    assert parse_url("s3://images/") == ("images", "")


@pytest.mark.parametrize(
    "settings",
    [
        {"STORAGE_URL": "gs://images/x"},
        {"STORAGE_URL": "s3:///no-bucket"},
        {"STORAGE_URL": "file://elsewhere/x"},
        {"STORAGE_URL": "s3://images", "S3_LINKS": "public"},
    ],
)
def test_a_wrong_storage_setting_stops_the_start(settings):
    with pytest.raises(ValueError):
        create_storage(_config(**settings))


@pytest.mark.parametrize(
    "endpoint, region",
    [("http://127.0.0.1:9000", "us-east-1"), (None, "eu-west-1"), (None, "us-east-1")],
)
def test_a_presigned_link_is_botocores_own_as_of_the_periods_start(monkeypatch, endpoint, region):
    """The same URL, byte for byte, as boto3's generate_presigned_url at the period's start,
    with a session token too: on MinIO, at AWS in any region, path or virtual-host style."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session/token+=")
    storage = S3Storage("images", "prod/", endpoint, region)
    now = 1_800_000_123
    start = now // 3600 * 3600

    link = storage.link_signer(3600, now=now)(KEY)

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: _utc(start))
    expected = storage.client().generate_presigned_url(
        "get_object", Params={"Bucket": "images", "Key": f"prod/{KEY}"}, ExpiresIn=7200
    )
    assert link == expected


def test_a_presigned_link_keeps_signs_expiry_and_stays_the_same_for_a_period(storage):
    now = int(time.time())
    period = 3600

    link = storage.link_signer(period, now=now)(KEY)

    query = parse_qs(urlsplit(link).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    expires = _epoch(signed_at) + int(query["X-Amz-Expires"][0])
    assert expires == sign(KEY, "secret", period, now=now)["expires"]
    later = now // period * period + period - 1  # the last second of the same period
    assert storage.link_signer(period, now=later)(KEY) == link
    assert storage.link_signer(period, now=later + 1)(KEY) != link
    assert storage.link_signer(period, now=now)("results/batch_1/gen_2.png") != link


def test_a_presigned_link_is_fetched_with_plain_requests(storage):
    storage.save(KEY, PNG)

    response = requests.get(storage.link_signer(3600)(KEY), timeout=10)

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Cache-Control"] == "private, max-age=300"  # as /media answers
    storage.delete(KEY)
    assert requests.get(storage.link_signer(3600)(KEY), timeout=10).status_code == 404


def test_the_apps_links_are_presigned_and_its_pages_may_show_them(tmp_path, s3_place, s3_prefix):
    app = make_app(tmp_path, **s3_place.settings(s3_prefix))
    with app.test_request_context("/"):
        link = signed_url(KEY)
    origin = app.extensions["batchgen.storage"].link_origin()

    assert link.startswith(f"{s3_place.endpoint_url}/{s3_place.bucket}/{s3_prefix}{KEY}?")
    csp = app.test_client().get("/login").headers["Content-Security-Policy"]
    assert f"img-src 'self' data: blob: {origin};" in csp


def test_with_proxy_links_the_web_process_serves_them_from_the_bucket(
    tmp_path, s3_place, s3_prefix
):
    app = make_app(tmp_path, **s3_place.settings(s3_prefix, S3_LINKS="proxy"))
    app.extensions["batchgen.storage"].save(KEY, PNG)
    with app.test_request_context("/"):
        link = urlsplit(signed_url(KEY))

    assert link.path == f"/media/{KEY}"
    with app.test_client().get(f"{link.path}?{link.query}") as response:
        assert response.status_code == 200
        assert response.data == PNG
        assert response.mimetype == "image/png"
        assert "img-src 'self' data: blob:;" in response.headers["Content-Security-Policy"]


def test_a_big_write_goes_up_in_parts_and_reads_back(s3_place, s3_prefix):
    storage = S3Storage(
        s3_place.bucket,
        s3_prefix,
        s3_place.endpoint_url,
        multipart_threshold=6 * 2**20,
        part_size=5 * 2**20,  # S3's smallest part
    )
    data = bytes(range(256)) * (11 * 2**12)  # 11 MiB: three parts

    storage.save(KEY, data)

    assert storage.read(KEY) == data
    assert s3_place.uploads(s3_prefix) == []


def test_a_write_in_parts_that_fails_is_aborted_and_never_seen(s3_place, s3_prefix, monkeypatch):
    storage = S3Storage(
        s3_place.bucket,
        s3_prefix,
        s3_place.endpoint_url,
        multipart_threshold=6 * 2**20,
        part_size=5 * 2**20,
    )
    client = storage.client()
    real_upload_part, sent = client.upload_part, []

    def connection_lost_after_the_first_part(**kwargs):
        if sent:
            raise EndpointConnectionError(endpoint_url=s3_place.endpoint_url)
        sent.append(kwargs["PartNumber"])
        return real_upload_part(**kwargs)

    monkeypatch.setattr(client, "upload_part", connection_lost_after_the_first_part)

    with pytest.raises(StorageUnavailable):
        storage.save(KEY, bytes(11 * 2**20))

    assert sent == [1]
    assert not storage.exists(KEY)
    assert s3_place.uploads(s3_prefix) == []  # aborted: no part left behind


def test_uploads_a_killed_writer_left_are_invisible_and_swept_once_old(
    storage, s3_place, s3_prefix
):
    begun = s3_place.client.create_multipart_upload(Bucket=s3_place.bucket, Key=s3_prefix + KEY)
    s3_place.client.upload_part(
        Bucket=s3_place.bucket,
        Key=s3_prefix + KEY,
        UploadId=begun["UploadId"],
        PartNumber=1,
        Body=b"half an ima",
    )

    # How old the server says it is (moto says 2010, whatever the day: ages are relative).
    [upload] = s3_place.uploads(s3_prefix)
    age = (datetime.now(UTC) - upload["Initiated"]).total_seconds()

    assert not storage.exists(KEY)
    assert storage.sweep_partials(older_than_seconds=age + 600) == 0  # its writer may be on it
    assert storage.sweep_partials(older_than_seconds=max(age - 600, 0)) == 1
    assert s3_place.uploads(s3_prefix) == []
    assert not storage.exists(KEY)


def test_a_server_that_never_answers_is_an_outage_not_a_hang(s3_place):
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        storage = S3Storage(
            "bucket", "", f"http://127.0.0.1:{port}", timeout_seconds=0.5, max_attempts=1
        )

        for operation in (lambda: storage.read(KEY), lambda: storage.save(KEY, b"x")):
            with pytest.raises(StorageUnavailable, match="timeout"):
                operation()
        with pytest.raises(StorageUnavailable):
            storage.check()


def test_a_missing_bucket_fails_the_check(s3_place):
    storage = S3Storage("no-such-bucket-here", "", s3_place.endpoint_url)

    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        storage.read(KEY)


def _utc(epoch):
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(naive_utc):
    return int(naive_utc.replace(tzinfo=UTC).timestamp())
