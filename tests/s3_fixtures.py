"""S3 on loopback for tests, shaped like the real iNaturalist open-data bucket.

- :func:`moto_server` runs moto's ``ThreadedMotoServer`` on 127.0.0.1 at a free port and yields
  its endpoint URL (``tests/conftest.py`` wraps it as the session fixture ``moto_s3``).
- Uploads are ``public-read`` like the real bucket, so anonymous clients can read them:
  :func:`anonymous_s3fs`, or ``OpenDataBucket(url="s3://BUCKET", endpoint_url=...)``.
- ``.gz`` objects carry ``Content-Encoding: gzip`` as the real bucket's do; readers get the
  gzip bytes back unchanged.

Typical use::

    def test_something(moto_s3, tmp_path):
        bucket = unique_bucket_name()
        upload_folder_as_bucket(sample_dir, moto_s3, bucket)
        fs = anonymous_s3fs(moto_s3)
        fs.cat_file(f"{bucket}/metadata/inaturalist-open-data-latest.tar.gz")
"""

from __future__ import annotations

import contextlib
import functools
import mimetypes
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import s3fs
from moto.server import ThreadedMotoServer

from bioasset.inat_format import LATEST_TARBALL, METADATA_PREFIX

REGION = "us-east-1"

#: Credentials for the boto3 uploader; moto accepts any. Readers stay anonymous.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run a moto S3 server on loopback; yields its endpoint URL, e.g. ``http://127.0.0.1:53211``."""
    # Port 0: the OS picks a free port at bind time, so parallel sessions never race for one.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def unique_bucket_name(prefix: str = "test") -> str:
    """A fresh bucket name, so that tests sharing one server never see each other's objects."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@functools.lru_cache(maxsize=None)
def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for uploading to ``endpoint_url`` with dummy credentials (cached: a client
    is slow to build and safe to share)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_public_bucket(endpoint_url: str, bucket: str) -> None:
    """Create ``bucket`` with a public-read ACL (a no-op if this test session already made it)."""
    client = s3_client(endpoint_url)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket, ACL="public-read")


def object_headers(key: str) -> dict[str, str]:
    """Content-Type and, for ``.gz``, ``Content-Encoding: gzip``, as the real bucket serves them:
    ``observations.csv.gz`` is ``text/csv`` gzip-encoded, a ``.tar.gz`` is ``application/x-tar``."""
    content_type, encoding = mimetypes.guess_type(key)
    headers = {"ContentType": content_type or "application/octet-stream"}
    if encoding == "gzip":
        headers["ContentEncoding"] = "gzip"
    return headers


def put_public_object(endpoint_url: str, bucket: str, key: str, body: bytes) -> dict[str, Any]:
    """Upload one public-read object with the real bucket's headers; returns its HEAD response
    (``ETag``, ``LastModified``, ``ContentLength``...)."""
    client = s3_client(endpoint_url)
    client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read", **object_headers(key))
    return client.head_object(Bucket=bucket, Key=key)


def upload_folder_as_bucket(local_dir: str | Path, endpoint_url: str, bucket: str) -> list[str]:
    """Create ``bucket`` and upload every file under ``local_dir`` to the key of its relative path
    (``/``-separated), public-read, ``.gz`` files with ``Content-Encoding: gzip``. Returns the keys
    in upload order.

    ``metadata/`` goes last, the latest tarball at the very end, as a release is published: a root
    CSV uploaded after the tarball, a second later, would make the release look half-published.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"upload_folder_as_bucket: {local_dir} is not a folder; pass the root of a bucket-shaped folder.")
    create_public_bucket(endpoint_url, bucket)
    client = s3_client(endpoint_url)
    keys = sorted((p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()), key=_publication_order)
    for key in keys:
        path = local_dir / key
        client.upload_file(str(path), bucket, key, ExtraArgs={"ACL": "public-read", **object_headers(key)})
    return keys


def _publication_order(key: str) -> tuple[bool, bool, str]:
    return (key.startswith(f"{METADATA_PREFIX}/"), key == LATEST_TARBALL, key)


def anonymous_s3fs(endpoint_url: str) -> s3fs.S3FileSystem:
    """An anonymous s3fs reader, as the pipeline reads the real bucket. s3fs caches listings per
    instance: pass ``refresh=True`` (or call ``invalidate_cache()``) after uploading more."""
    return s3fs.S3FileSystem(anon=True, client_kwargs={"endpoint_url": endpoint_url, "region_name": REGION})
