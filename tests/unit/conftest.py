"""Fixtures of the unit tests: kie.ai mocked with `responses`, and a kie engine pointed at it."""

import pytest
import responses

from tests.unit.kie_mocks import API, KEY, UPLOAD
from webapp.providers.kie import KieProvider


@pytest.fixture
def kie_mock():
    """Every HTTP call goes to `responses`; a call nobody mocked fails the test."""
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def provider():
    return KieProvider(KEY, API, UPLOAD)
