"""Fixtures of the engine tests: apps on the kie engine, pointed at the stub kie.ai."""

import pytest

from tests.support import make_app


@pytest.fixture
def kie_app(tmp_path, database_url):
    """Build an app on the kie engine, pointed at a stub (conftest checks its ledger)."""

    def build(stub, **overrides):
        config = {
            "GENERATION_BACKEND": "kie",
            "KIE_API_KEY": "test-key",
            "KIE_API_BASE": stub.base_url,
            "KIE_UPLOAD_BASE": stub.base_url,
            "HUEY_MEMORY": False,
            "POLL_DELAYS": (0.2,),
            **overrides,
        }
        return make_app(tmp_path, database_url, **config)

    return build
