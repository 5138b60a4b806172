"""The pages' fixtures: the signed-in user's API client and their browser (a session cookie)."""

import pytest

from tests.support import ApiClient, signed_in_browser


@pytest.fixture
def alice(app, user):
    return ApiClient(app, *user)


@pytest.fixture
def browser(app, user):
    return signed_in_browser(app, user[1])
