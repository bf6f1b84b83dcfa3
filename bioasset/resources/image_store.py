from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from bioasset import config
from bioasset.download import ImageStore


class ImageStoreResource(ConfigurableResource):
    """The image store: ``{store}/{source}/{size}/{photo_id}.{ext}`` at any fsspec URL.

    Defaults to ``BIOASSET_HOME/images``; an ``s3://`` URL keeps the same layout in a bucket
    (``endpoint_url`` for an S3-compatible server, credentials for writing to it).
    """

    url: Optional[str] = Field(default=None, description="fsspec URL of the store root; default: BIOASSET_HOME/images")
    endpoint_url: Optional[str] = Field(default=None, description="S3-compatible endpoint of an s3:// store")
    region: Optional[str] = Field(default=None, description="S3 region of an s3:// store")
    access_key_id: Optional[str] = Field(default=None, description="Credentials of an s3:// store (default: the AWS chain)")
    secret_access_key: Optional[str] = Field(default=None, description="Credentials of an s3:// store (default: the AWS chain)")

    def resolved_url(self) -> str:
        return self.url or config.image_store_url()

    def store(self) -> ImageStore:
        """The plain-Python image store that domain code works on."""
        return ImageStore(
            self.resolved_url(),
            endpoint_url=self.endpoint_url,
            region=self.region,
            key=self.access_key_id,
            secret=self.secret_access_key,
        )
