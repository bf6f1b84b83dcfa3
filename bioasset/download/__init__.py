"""The image download engine: concurrent, resumable, verified downloads into the image store.

Domain code: plain Python, no Dagster. See :func:`download_images`.
"""

from bioasset.download.engine import (
    DEFAULT_MAX_IMAGE_BYTES,
    DownloadProgress,
    DownloadReport,
    ItemResult,
    Outcome,
    download_images,
)
from bioasset.download.fetch import RetryPolicy, parse_retry_after
from bioasset.download.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_RESAMPLE,
    ImageRejected,
    VerifiedImage,
    shorter_side_target,
    verify_image,
)
from bioasset.download.items import (
    EXTENSION_FORMATS,
    INATURALIST_BUCKET_URL,
    INATURALIST_SOURCE,
    DownloadItem,
    ImageStore,
    InvalidItemError,
    inaturalist_item,
    stored_size_name,
)
from bioasset.download.journal import StoredImage
from bioasset.download.ratelimit import AdaptiveRateLimiter

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_RESAMPLE",
    "EXTENSION_FORMATS",
    "INATURALIST_BUCKET_URL",
    "INATURALIST_SOURCE",
    "AdaptiveRateLimiter",
    "DownloadItem",
    "DownloadProgress",
    "DownloadReport",
    "ImageRejected",
    "ImageStore",
    "InvalidItemError",
    "ItemResult",
    "Outcome",
    "RetryPolicy",
    "StoredImage",
    "VerifiedImage",
    "download_images",
    "inaturalist_item",
    "parse_retry_after",
    "shorter_side_target",
    "stored_size_name",
    "verify_image",
]
