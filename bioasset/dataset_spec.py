"""Dataset specs: the YAML files in ``datasets/`` that say which photos make a dataset.

A spec names a root taxon, the rank the labels are taken at, optional taxa to include or exclude,
the quality grades, licenses and image size to use, per-class limits, the split and a seed::

    name: demo-insects
    root_taxon: Insecta            # a name, an id (47158) or {id: 47158, name: Insecta}
    label_rank: species

Loading validates everything that can be checked without the taxonomy; every problem is reported
as a :class:`DatasetSpecError` naming the file, the field, the problem and the fix. Taxon names
are checked against the taxonomy later with :func:`resolve_spec_taxa`, because names are not
unique (*Morus* and *Pieris* are genera of both plants and animals).

Choices (ranks, quality grades, licenses, image sizes, grouping, source) are matched
case-insensitively and stored in their canonical spelling: licenses upper case (``cc-by`` ->
``CC-BY``), everything else lower case. Lists of choices are de-duplicated and kept in the order
of :mod:`bioasset.inat_format`, so that the order written in the YAML does not change the spec.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, NamedTuple, Protocol, Sequence

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bioasset.inat_format import IMAGE_SIZES, LICENSES, LIFE_TAXON_ID, MAIN_RANKS, QUALITY_GRADES
from bioasset.splits import GROUPINGS, check_ratios

SOURCES = ("inaturalist",)

#: A dataset name is also a Dagster partition key, so it avoids ``|``, ``,``, ``[``, ``]`` and ``...``.
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

SPEC_SUFFIXES = (".yaml", ".yml")

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

#: Where a problem is: field names and list indexes, e.g. ``("include_taxa", 2, "name")``.
FieldPath = tuple[str | int, ...]


def field_path_text(field: FieldPath) -> str:
    """``include_taxa[2].name``; empty for a problem with the whole file."""
    text = ""
    for part in field:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass(frozen=True)
class SpecProblem:
    """One problem in one spec: where it is, what is wrong and how to fix it."""

    source: str
    field: FieldPath
    problem: str
    fix: str

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, field_path_text(self.field)) if part)
        # A problem that lists things (candidates) ends with its list; the fix goes on its own line.
        fix_separator = "\n    Fix: " if "\n" in self.problem else ". Fix: "
        return f"{where}: {self.problem}{fix_separator}{self.fix}"


class DatasetSpecError(ValueError):
    """Every problem found in one or more specs, one per line."""

    def __init__(self, problems: Sequence[SpecProblem]):
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            message = f"{len(self.problems)} problems in dataset specs:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class _Problem(ValueError):
    """Raised inside validators; ``field`` is relative to where pydantic reports the error."""

    def __init__(self, problem: str, fix: str, field: FieldPath = ()):
        super().__init__(problem)
        self.problem, self.fix, self.field = problem, fix, field


def _close_matches(word: str, choices: Iterable[str]) -> list[str]:
    choices = list(choices)
    by_folded = {c.casefold(): c for c in choices}
    return [by_folded[m] for m in difflib.get_close_matches(word.casefold(), list(by_folded), n=3, cutoff=0.6)]


def _with_suggestion(word: str, choices: Iterable[str], fix: str) -> str:
    """``fix``, led by "did you mean …?" when ``word`` looks like a typo of one of ``choices``."""
    matches = _close_matches(word, choices)
    if not matches:
        return fix
    return f"did you mean {' or '.join(repr(m) for m in matches)}? {fix[0].upper()}{fix[1:]}"


def _canonical_choice(value: Any, choices: Sequence[str], what: str, field: FieldPath = ()) -> str:
    """``value`` spelled as in ``choices`` (matched case-insensitively), or a problem listing them."""
    fix = f"use one of {', '.join(choices)} (case does not matter)"
    if isinstance(value, str):
        by_folded = {c.casefold(): c for c in choices}
        folded = value.strip().casefold()
        if folded in by_folded:
            return by_folded[folded]
        fix = _with_suggestion(value, choices, fix)
    raise _Problem(f"{value!r} is not {what}", fix, field)


def _canonical_choices(value: Any, choices: Sequence[str], what: str) -> tuple[str, ...]:
    """A list (or a single value) of choices: canonical spelling, de-duplicated, in ``choices`` order."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _Problem(f"expected a list, got {value!r}", f"write a list, e.g. [{choices[0]}]")
    if not items:
        raise _Problem("the list is empty, so no photo could match", f"name at least one of {', '.join(choices)}")
    chosen = {_canonical_choice(item, choices, what, (index,)) for index, item in enumerate(items)}
    return tuple(c for c in choices if c in chosen)


def _one_of(choices: Sequence[str], what: str) -> BeforeValidator:
    """Field annotation: one of ``choices``, see :func:`_canonical_choice`."""
    return BeforeValidator(lambda value: _canonical_choice(value, choices, what))


def _some_of(choices: Sequence[str], what: str) -> BeforeValidator:
    """Field annotation: a non-empty list of ``choices``, see :func:`_canonical_choices`."""
    return BeforeValidator(lambda value: _canonical_choices(value, choices, what))


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Ratio = Annotated[float, Field(strict=True, ge=0, le=1)]
Count = Annotated[int, Field(strict=True, ge=1)]


class TaxonRef(_SpecModel):
    """A taxon by name, by id, or both (then they must agree). ``rank`` picks one of several
    taxa with the same name, e.g. ``{name: Bombus, rank: genus}`` rather than the subgenus."""

    id: Annotated[int, Field(strict=True, gt=0)] | None = None
    name: str | None = None
    rank: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name_or_id(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise _Problem(f"{value!r} is not a taxon", "write a taxon name (Insecta) or id (47158)")
        if isinstance(value, int):
            return {"id": value}
        if isinstance(value, str):
            text = value.strip()
            return {"id": int(text)} if text.isdigit() else {"name": text}
        return value

    @field_validator("name")
    @classmethod
    def _tidy_name(cls, name: str | None) -> str | None:
        if name is None:
            return None
        tidy = " ".join(name.split())
        if not tidy:
            raise _Problem("the taxon name is empty", "write a scientific name such as Insecta, or an id")
        return tidy

    @field_validator("rank")
    @classmethod
    def _tidy_rank(cls, rank: str | None) -> str | None:
        return rank.strip().lower() if rank is not None else None

    @model_validator(mode="after")
    def _needs_name_or_id(self) -> TaxonRef:
        if self.id is None and self.name is None:
            raise _Problem("neither a name nor an id is given", "write {name: Insecta}, {id: 47158} or just Insecta")
        return self

    def __str__(self) -> str:
        parts = [self.name or f"id {self.id}"]
        if self.name and self.id is not None:
            parts.append(f"(id {self.id})")
        if self.rank:
            parts.append(f"[{self.rank}]")
        return " ".join(parts)


class ResizeSpec(_SpecModel):
    """Resize stored images after download: shorter side in pixels, JPEG quality."""

    shorter_side: Annotated[int, Field(strict=True, gt=0)]
    jpeg_quality: Annotated[int, Field(strict=True, ge=1, le=100)] = 90


class SplitSpec(_SpecModel):
    """Split ratios (each >= 0, summing to 1) and what photos are grouped by: photos of one group
    never straddle splits (see :mod:`bioasset.splits`)."""

    train: Ratio = 0.7
    val: Ratio = 0.15
    test: Ratio = 0.15
    group_by: Annotated[str, _one_of(GROUPINGS, "a grouping")] = "observation"

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        try:
            check_ratios(self.ratios)
        except ValueError as error:
            raise _Problem(str(error), "make train + val + test add up to 1, e.g. 0.7, 0.15, 0.15") from None
        return self

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


class DatasetSpec(_SpecModel):
    """A dataset: which photos, labelled at which rank, split how. Photos come from the subtree of
    ``root_taxon``, narrowed to the subtrees of ``include_taxa`` (when given), minus those of
    ``exclude_taxa``; labels are each photo's ancestor at ``label_rank`` (photos identified only
    above it are left out)."""

    name: str = Field(description="the dataset's name and Dagster partition key, e.g. demo-insects")
    source: Annotated[str, _one_of(SOURCES, "a known source")] = Field(
        "inaturalist", description=f"where the photos come from: {', '.join(SOURCES)}"
    )
    description: str = Field("", description="one paragraph for the dataset card")
    root_taxon: TaxonRef = Field(description="the taxon whose subtree is searched, e.g. Insecta or 47158")
    label_rank: Annotated[str, _one_of(MAIN_RANKS, "a main rank")] = Field(
        description=f"the rank labels are taken at: {', '.join(MAIN_RANKS)}"
    )
    include_taxa: tuple[TaxonRef, ...] = Field((), description="keep only these subtrees (all of root_taxon if empty)")
    exclude_taxa: tuple[TaxonRef, ...] = Field((), description="drop these subtrees")
    quality_grades: Annotated[tuple[str, ...], _some_of(QUALITY_GRADES, "a quality grade")] = Field(
        ("research",), description=f"any of {', '.join(QUALITY_GRADES)}"
    )
    licenses: Annotated[tuple[str, ...], _some_of(LICENSES, "a license the bucket exports")] = Field(
        LICENSES, description=f"any of {', '.join(LICENSES)}"
    )
    image_size: Annotated[str, _one_of(tuple(IMAGE_SIZES), "an iNaturalist image size")] = Field(
        "medium", description=f"the iNaturalist size downloaded: {', '.join(IMAGE_SIZES)}"
    )
    resize: ResizeSpec | None = Field(None, description="{shorter_side: 224, jpeg_quality: 90}, or nothing")
    min_per_class: Count = Field(1, description="a class with fewer photos is dropped")
    max_per_class: Count | None = Field(None, description="a class with more photos is sampled down to this")
    max_photos_per_observation: Count | None = Field(None, description="at most this many photos of one observation")
    split: SplitSpec = Field(SplitSpec(), description="{train: 0.7, val: 0.15, test: 0.15, group_by: observation}")
    seed: Annotated[int, Field(strict=True, ge=0)] = Field(0, description="the seed of every random choice")

    _source_path: str | None = PrivateAttr(None)

    @property
    def source_path(self) -> str:
        """The file the spec was loaded from (or ``dataset spec NAME`` when built in code)."""
        return self._source_path or f"dataset spec {self.name}"

    @field_validator("name", mode="before")
    @classmethod
    def _partition_key_name(cls, value: Any) -> Any:
        if isinstance(value, str) and not DATASET_NAME.match(value):
            suggestion = re.sub(r"[^a-z0-9_-]+", "-", value.strip().lower()).strip("-_")[:64] or "my-dataset"
            raise _Problem(
                f"{value!r} is not a valid dataset name (it is also a Dagster partition key)",
                f"use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit, e.g. {suggestion!r}",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.max_per_class is not None and self.max_per_class < self.min_per_class:
            raise _Problem(
                f"max_per_class ({self.max_per_class}) is less than min_per_class ({self.min_per_class})",
                "raise max_per_class or lower min_per_class so that min_per_class <= max_per_class",
                ("max_per_class",),
            )
        if self.resize is not None and self.resize.shorter_side > IMAGE_SIZES[self.image_size]:
            larger = [size for size, side in IMAGE_SIZES.items() if side >= self.resize.shorter_side]
            raise _Problem(
                f"shorter_side {self.resize.shorter_side} is larger than the longest side of "
                f"{self.image_size!r} images ({IMAGE_SIZES[self.image_size]} px), so every image would be upscaled",
                f"lower shorter_side, or download a larger image_size ({', '.join(larger) or 'none is large enough'})",
                ("resize", "shorter_side"),
            )
        self._check_taxon_lists()
        return self

    def _check_taxon_lists(self) -> None:
        seen: dict[TaxonRef, FieldPath] = {self.root_taxon: ("root_taxon",)}
        for list_name in ("include_taxa", "exclude_taxa"):
            for index, ref in enumerate(getattr(self, list_name)):
                if ref in seen:
                    first = field_path_text(seen[ref])
                    raise _Problem(f"{ref} is already given as {first}", "remove one of the two", (list_name, index))
                seen[ref] = (list_name, index)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a spec with ``seed`` twice is a mistake."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _model_at(field: FieldPath) -> type[BaseModel] | None:
    """The spec model that holds the field at ``field`` (walking through lists and optionals)."""
    model: type[BaseModel] | None = DatasetSpec
    for part in field:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as ``SplitSpec``, ``ResizeSpec | None`` or ``tuple[TaxonRef, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found:
            return found
    return None


def _field_list(model: type[BaseModel] | None) -> str:
    return ", ".join(model.model_fields) if model else "(none)"


_FIXES_BY_ERROR_TYPE = {
    "int_type": "write a whole number without quotes, e.g. 10",
    "float_type": "write a number without quotes, e.g. 0.15",
    "string_type": "write text; quote it if YAML reads it as a number or a boolean",
    "greater_than": "use a number greater than {gt}",
    "greater_than_equal": "use a number of at least {ge}",
    "less_than_equal": "use a number of at most {le}",
    "tuple_type": "write a list, e.g. [a, b]",
}


def _problem_from_pydantic(source: str, error: dict) -> SpecProblem:
    location: FieldPath = tuple(error["loc"])
    kind = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _Problem):
        return SpecProblem(source, location + cause.field, cause.problem, cause.fix)
    if kind == "extra_forbidden":
        model = _model_at(location[:-1])
        unknown = str(location[-1])
        fix = _with_suggestion(unknown, model.model_fields if model else (), f"the valid fields here are {_field_list(model)}")
        return SpecProblem(source, location, f"unknown field {unknown!r}", fix)
    if kind == "missing":
        model = _model_at(location[:-1])
        info = model.model_fields.get(str(location[-1])) if model else None
        about = f" ({info.description})" if info and info.description else ""
        return SpecProblem(source, location, "this required field is missing", f"add `{location[-1]}:`{about}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(location)
        return SpecProblem(
            source, location, f"expected a mapping, got {error.get('input')!r}",
            f"write a mapping with some of the fields {_field_list(model)}",
        )
    fix = _FIXES_BY_ERROR_TYPE.get(kind, "see the field's description in bioasset/dataset_spec.py").format(
        **(error.get("ctx") or {})
    )
    message = error["msg"][0].lower() + error["msg"][1:]
    return SpecProblem(source, location, f"{message}, got {error.get('input')!r}", fix)


def _file_error(source: str, problem: str, fix: str) -> DatasetSpecError:
    """A problem with a whole file (or folder), not with one field."""
    return DatasetSpecError([SpecProblem(source, (), problem, fix)])


def parse_spec(data: Any, source: str = "dataset spec") -> DatasetSpec:
    """A spec from already-parsed YAML (a mapping); ``source`` names it in errors."""
    if not isinstance(data, dict):
        shown = "an empty file" if data is None else f"a {type(data).__name__}"
        raise _file_error(
            source, f"expected a mapping of fields, got {shown}", "write `name: …`, `root_taxon: …`, `label_rank: …` at the top level"
        )
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as error:
        raise DatasetSpecError([_problem_from_pydantic(source, e) for e in error.errors()]) from None
    spec._source_path = source
    return spec


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one spec file; raises :class:`DatasetSpecError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise _file_error(source, f"cannot read the file: {error.strerror}", "check the path") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(error, "problem", None) or str(error)
        raise _file_error(source, f"not valid YAML{where}: {what}", f"correct the YAML{where}") from None
    return parse_spec(data, source)


def load_specs(folder: str | Path) -> dict[str, DatasetSpec]:
    """Every spec in ``folder`` (``*.yaml``, ``*.yml``) by name; problems from all files are
    reported together, and two files with the same ``name`` are rejected naming both."""
    directory = Path(folder)
    if not directory.is_dir():
        raise _file_error(str(directory), "not a folder", "point at the folder holding the dataset YAML files")
    specs: dict[str, DatasetSpec] = {}
    problems: list[SpecProblem] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()):
        try:
            spec = load_spec(path)
        except DatasetSpecError as error:
            problems.extend(error.problems)
            continue
        if spec.name in specs:
            other = specs[spec.name].source_path
            problems.append(
                SpecProblem(
                    str(path), ("name",), f"the name {spec.name!r} is already used by {other}",
                    f"rename the dataset in one of {other} and {path}",
                )
            )
            continue
        specs[spec.name] = spec
    if problems:
        raise DatasetSpecError(problems)
    return specs


def spec_hash(spec: DatasetSpec) -> str:
    """sha256 of the normalised spec: defaults filled in, choices canonical, taxon lists sorted.
    Independent of YAML key order, formatting, comments and of where the file lives.

    Every field counts, defaults included, so a changed default changes the hash (a dataset that
    changes is never mistaken for the old one); adding a field to this model changes every hash.
    """
    normal = spec.model_dump(mode="json")
    for list_name in ("include_taxa", "exclude_taxa"):
        normal[list_name] = sorted(normal[list_name], key=lambda ref: json.dumps(ref, sort_keys=True))
    text = json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Taxon resolution
# ---------------------------------------------------------------------------------------------


class TaxonCandidate(NamedTuple):
    """A taxon as the taxonomy knows it. ``path`` is its ancestry plus its own id
    (``48460/1/…/X``, as in the ``taxonomy`` table); ``lineage`` is the same path in names, for
    people (``Animalia > Chordata > Aves > … > Morus``)."""

    taxon_id: int
    name: str
    rank: str
    path: str
    lineage: str

    def is_within(self, other: TaxonCandidate) -> bool:
        """Whether this taxon lies in the subtree of ``other`` (itself included)."""
        return self.path == other.path or self.path.startswith(other.path + "/")

    def describe(self) -> str:
        return f"id {self.taxon_id} ({self.rank}): {self.lineage}"


class TaxonLookup(Protocol):
    """What resolution needs from the taxonomy (active taxa only). An in-memory version is
    :class:`InMemoryTaxonLookup`; a DuckDB one runs ``WHERE lower(name) = lower(?)`` and
    ``WHERE taxon_id = ?`` over the ``taxonomy`` table."""

    def taxa_named(self, name: str) -> Sequence[TaxonCandidate]:
        """Every taxon with this scientific name, compared case-insensitively."""
        ...

    def taxon_with_id(self, taxon_id: int) -> TaxonCandidate | None: ...


class InMemoryTaxonLookup:
    """A :class:`TaxonLookup` over a list of candidates (tests, small taxonomies)."""

    def __init__(self, candidates: Iterable[TaxonCandidate]):
        self._by_id = {c.taxon_id: c for c in candidates}
        self._by_name: dict[str, list[TaxonCandidate]] = {}
        for candidate in self._by_id.values():
            self._by_name.setdefault(_name_key(candidate.name), []).append(candidate)

    @classmethod
    def from_taxa(cls, rows: Iterable[tuple[int, str, str, str]]) -> InMemoryTaxonLookup:
        """From rows of the ``taxa`` table: (taxon_id, ancestry, rank, name); the ancestry is
        ``/``-separated ids from Life (48460) down to the parent, empty for Life itself."""
        rows = list(rows)
        names = {taxon_id: name for taxon_id, _, _, name in rows}
        candidates = []
        for taxon_id, ancestry, rank, name in rows:
            path = f"{ancestry}/{taxon_id}" if ancestry else str(taxon_id)
            ids = [int(i) for i in path.split("/") if int(i) != LIFE_TAXON_ID]
            lineage = " > ".join(names.get(i, f"#{i}") for i in ids) or name
            candidates.append(TaxonCandidate(taxon_id, name, rank, path, lineage))
        return cls(candidates)

    def taxa_named(self, name: str) -> Sequence[TaxonCandidate]:
        return sorted(self._by_name.get(_name_key(name), []), key=lambda c: c.taxon_id)

    def taxon_with_id(self, taxon_id: int) -> TaxonCandidate | None:
        return self._by_id.get(taxon_id)


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _as_ref(ref: TaxonRef | int | str) -> TaxonRef:
    if isinstance(ref, TaxonRef):
        return ref
    try:
        return TaxonRef.model_validate(ref)
    except ValidationError as error:
        raise DatasetSpecError([_problem_from_pydantic("taxon reference", e) for e in error.errors()]) from None


def _resolve(ref: TaxonRef, lookup: TaxonLookup, within: TaxonCandidate | None) -> TaxonCandidate:
    """The one taxon ``ref`` means; raises :class:`_Problem`."""
    if ref.id is not None:
        found = lookup.taxon_with_id(ref.id)
        if found is None:
            raise _Problem(
                f"no taxon has id {ref.id} in this taxonomy",
                f"check https://www.inaturalist.org/taxa/{ref.id}, or write the name instead",
            )
        if ref.name is not None and _name_key(ref.name) != _name_key(found.name):
            raise _Problem(f"id {ref.id} is {found.name}, not {ref.name}", "correct the name or the id so that they agree")
        if ref.rank is not None and ref.rank != found.rank:
            raise _Problem(f"id {ref.id} ({found.name}) is a {found.rank}, not a {ref.rank}", "correct the rank or the id")
        candidates = [found]
    else:
        assert ref.name is not None
        named = list(lookup.taxa_named(ref.name))
        if not named:
            raise _Problem(
                f"no taxon is named {ref.name!r} in this taxonomy",
                "check the spelling of the scientific name (not a common name), or give the id",
            )
        candidates = [c for c in named if ref.rank is None or c.rank == ref.rank]
        if not candidates:
            listing = "; ".join(c.describe() for c in named)
            raise _Problem(
                f"no {ref.rank} is named {ref.name!r}; taxa with that name: {listing}", "correct the rank, or give the id"
            )
    if within is not None:
        inside = [c for c in candidates if c.is_within(within)]
        if not inside:
            listing = "; ".join(c.describe() for c in candidates)
            raise _Problem(
                f"{ref} is not under root_taxon {within.name} ({within.lineage}): it is {listing}",
                "remove it, or choose a root_taxon that contains it",
            )
        candidates = inside
    if len(candidates) > 1:
        listing = "".join(f"\n      {c.describe()}" for c in candidates)
        ranks_differ = len({c.rank for c in candidates}) == len(candidates)
        by_rank = f" or by rank ({{name: {ref.name}, rank: {candidates[0].rank}}})" if ranks_differ else ""
        raise _Problem(
            f"the name {ref.name!r} is ambiguous: {len(candidates)} taxa have it:{listing}",
            f"say which one you mean by its id (e.g. {candidates[0].taxon_id} for the first){by_rank}",
        )
    return candidates[0]


def resolve_taxon(ref: TaxonRef | int | str, lookup: TaxonLookup, *, within: TaxonCandidate | None = None) -> TaxonCandidate:
    """The one taxon ``ref`` (a name, an id or a :class:`TaxonRef`) means. With ``within``, only
    taxa in that subtree count (so *Pieris* under Insecta is the butterfly). Raises
    :class:`DatasetSpecError` for an unknown id or name, and for an ambiguous name, listing the
    candidates with their lineages."""
    taxon_ref = _as_ref(ref)
    try:
        return _resolve(taxon_ref, lookup, within)
    except _Problem as problem:
        raise DatasetSpecError([SpecProblem(f"taxon {taxon_ref}", problem.field, problem.problem, problem.fix)]) from None


@dataclass(frozen=True)
class ResolvedTaxa:
    """The taxa of a spec, resolved against one taxonomy."""

    root: TaxonCandidate
    include: tuple[TaxonCandidate, ...]
    exclude: tuple[TaxonCandidate, ...]


def resolve_spec_taxa(spec: DatasetSpec, lookup: TaxonLookup) -> ResolvedTaxa:
    """Resolve ``root_taxon``, ``include_taxa`` and ``exclude_taxa``; the lists only inside the
    root's subtree. Every problem of the spec is reported at once, with its file and field."""
    problems: list[SpecProblem] = []

    def attempt(ref: TaxonRef, field: FieldPath, within: TaxonCandidate | None) -> TaxonCandidate | None:
        try:
            return _resolve(ref, lookup, within)
        except _Problem as problem:
            problems.append(SpecProblem(spec.source_path, field + problem.field, problem.problem, problem.fix))
            return None

    root = attempt(spec.root_taxon, ("root_taxon",), None)
    if root is None:
        raise DatasetSpecError(problems)
    if root.rank in MAIN_RANKS and MAIN_RANKS.index(spec.label_rank) <= MAIN_RANKS.index(root.rank):
        below = MAIN_RANKS[MAIN_RANKS.index(root.rank) + 1 :]
        problems.append(
            SpecProblem(
                spec.source_path, ("label_rank",),
                f"{spec.label_rank!r} is not below root_taxon {root.name} ({root.rank}), so there would be at most one class",
                f"choose a rank below {root.rank}: {', '.join(below) or 'none; choose a higher root_taxon'}",
            )
        )
    include = [attempt(ref, ("include_taxa", i), root) for i, ref in enumerate(spec.include_taxa)]
    exclude = [attempt(ref, ("exclude_taxa", i), root) for i, ref in enumerate(spec.exclude_taxa)]
    if problems:
        raise DatasetSpecError(problems)
    return ResolvedTaxa(root, tuple(t for t in include if t), tuple(t for t in exclude if t))
