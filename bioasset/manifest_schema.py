"""The dataset manifest: one row per selected photo. The contract between selection
(``dataset_manifest``), image download (``taxon_images``), the registry (``dataset_version``),
export and training.

Every rank column comes as a name and an id (``genus`` / ``genus_id``) because names are not
unique across kingdoms (*Morus*, *Pieris*); a missing rank is null.
"""

from __future__ import annotations

from bioasset.inat_format import MAIN_RANKS

#: Column -> DuckDB type, in file order, of ``dataset_manifest``.
MANIFEST_COLUMNS: dict[str, str] = {
    "photo_id": "BIGINT",
    "observation_uuid": "VARCHAR",
    "observer_id": "INTEGER",
    "observer_login": "VARCHAR",
    "observer_name": "VARCHAR",
    "taxon_id": "INTEGER",  # the photo's own (observation's) taxon, possibly below the label rank
    "label_id": "INTEGER",  # the taxon at the spec's label_rank: the class
    "label_name": "VARCHAR",
    **{column: kind for rank in MAIN_RANKS for column, kind in ((rank, "VARCHAR"), (f"{rank}_id", "INTEGER"))},
    "license": "VARCHAR",
    "attribution": "VARCHAR",  # "© name, some rights reserved (CC-BY)" / "name, no rights reserved (CC0)"
    "quality_grade": "VARCHAR",
    "observed_on": "DATE",
    "extension": "VARCHAR",
    "image_size": "VARCHAR",  # iNaturalist size name the image is fetched at
    "source_url": "VARCHAR",  # where the image comes from: an fsspec or HTTP(S) URL
    "split": "VARCHAR",  # train / val / test
}

#: Columns a frozen ``dataset_version`` adds once its images are complete.
IMAGE_COLUMNS: dict[str, str] = {
    "image_path": "VARCHAR",  # path of the stored file, relative to the image store root
    "sha256": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
}

VERSION_COLUMNS: dict[str, str] = {**MANIFEST_COLUMNS, **IMAGE_COLUMNS}

SPLITS = ("train", "val", "test")
