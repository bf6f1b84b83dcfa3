"""Shared pytest fixtures. S3 helpers live in ``tests/s3_fixtures.py``; import them as
``from s3_fixtures import ...`` (pytest puts tests/ on sys.path because it has no __init__.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3_fixtures import DUMMY_CREDENTIALS, create_public_bucket, moto_server, unique_bucket_name


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1, one per test session (per xdist worker).

    Sets dummy AWS credentials in the environment for boto3 uploaders while it runs. Tests share
    the server: give each its own bucket (``s3_bucket`` or ``unique_bucket_name()``).
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DUMMY_CREDENTIALS.items():
            patch.setenv(name, value)
        with moto_server() as endpoint_url:
            yield endpoint_url


@pytest.fixture
def s3_bucket(moto_s3: str) -> str:
    """The name of a fresh, empty, public-read bucket on ``moto_s3``."""
    bucket = unique_bucket_name()
    create_public_bucket(moto_s3, bucket)
    return bucket
