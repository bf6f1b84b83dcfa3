from __future__ import annotations

from typing import Optional

import fsspec
from dagster import ConfigurableResource
from pydantic import Field

from bioasset import config
from bioasset.storage import filesystem_for


class OpenDataBucket(ConfigurableResource):
    """The iNaturalist open-data bucket, or anything laid out like it, addressed by fsspec URL.

    Defaults to the local sample bucket under ``BIOASSET_HOME``; ``BIOASSET_OPEN_DATA_URL`` and
    ``BIOASSET_S3_ENDPOINT_URL`` override. The real source is ``s3://inaturalist-open-data``,
    read anonymously in us-east-1. Objects carry ``Content-Encoding: gzip``; this resource hands
    out their bytes exactly as stored.
    """

    url: Optional[str] = Field(default=None, description="fsspec URL of the bucket root; default: env or the local sample bucket")
    endpoint_url: Optional[str] = Field(default=None, description="S3-compatible endpoint; default: BIOASSET_S3_ENDPOINT_URL")
    region: str = Field(default="us-east-1", description="S3 region of the bucket")
    anonymous: bool = Field(default=True, description="Read without credentials (the iNaturalist bucket is public-read)")
    access_key_id: Optional[str] = Field(default=None, description="Credentials for a private S3-compatible store")
    secret_access_key: Optional[str] = Field(default=None, description="Credentials for a private S3-compatible store")

    def resolved_url(self) -> str:
        return self.url or config.open_data_url()

    def resolved_endpoint_url(self) -> str | None:
        return self.endpoint_url or config.s3_endpoint_url()

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem and the bucket's root path on it."""
        credentials = self.access_key_id or self.secret_access_key
        return filesystem_for(
            self.resolved_url(),
            endpoint_url=self.resolved_endpoint_url(),
            anon=self.anonymous and not credentials,
            key=self.access_key_id,
            secret=self.secret_access_key,
            region=self.region,
        )
