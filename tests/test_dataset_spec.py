"""Dataset specs: loading, every validation message, taxon resolution and spec_hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioasset.dataset_spec import (
    DatasetSpecError,
    InMemoryTaxonLookup,
    load_spec,
    load_specs,
    resolve_spec_taxa,
    resolve_taxon,
    spec_hash,
)
from bioasset.inat_format import IMAGE_SIZES, INSECTA_TAXON_ID, LICENSES, MAIN_RANKS

DATASETS = Path(__file__).resolve().parents[1] / "datasets"

# (taxon_id, ancestry, rank, name) as in the taxa table. Life, Animalia, Chordata, Aves, Plantae,
# Arthropoda, Insecta, Lepidoptera and Hymenoptera have their real iNaturalist ids; the 9xxxxx
# ids are made up for this test.
TAXA = [
    (48460, "", "stateofmatter", "Life"),
    (1, "48460", "kingdom", "Animalia"),
    (2, "48460/1", "phylum", "Chordata"),
    (3, "48460/1/2", "class", "Aves"),
    (900001, "48460/1/2/3", "order", "Suliformes"),
    (900002, "48460/1/2/3/900001", "family", "Sulidae"),
    (900003, "48460/1/2/3/900001/900002", "genus", "Morus"),
    (47120, "48460/1", "phylum", "Arthropoda"),
    (47158, "48460/1/47120", "class", "Insecta"),
    (47157, "48460/1/47120/47158", "order", "Lepidoptera"),
    (900010, "48460/1/47120/47158/47157", "family", "Pieridae"),
    (900011, "48460/1/47120/47158/47157/900010", "genus", "Pieris"),
    (900012, "48460/1/47120/47158/47157/900010/900011", "species", "Pieris rapae"),
    (47201, "48460/1/47120/47158", "order", "Hymenoptera"),
    (900020, "48460/1/47120/47158/47201", "family", "Apidae"),
    (900021, "48460/1/47120/47158/47201/900020", "genus", "Bombus"),
    (900022, "48460/1/47120/47158/47201/900020/900021", "subgenus", "Bombus"),
    (900023, "48460/1/47120/47158/47201/900020/900021/900022", "species", "Bombus terrestris"),
    (47126, "48460", "kingdom", "Plantae"),
    (900100, "48460/47126", "phylum", "Tracheophyta"),
    (900101, "48460/47126/900100", "class", "Magnoliopsida"),
    (900102, "48460/47126/900100/900101", "order", "Rosales"),
    (900103, "48460/47126/900100/900101/900102", "family", "Moraceae"),
    (900104, "48460/47126/900100/900101/900102/900103", "genus", "Morus"),
    (900105, "48460/47126/900100/900101", "order", "Ericales"),
    (900106, "48460/47126/900100/900101/900105", "family", "Ericaceae"),
    (900107, "48460/47126/900100/900101/900105/900106", "genus", "Pieris"),
    (900108, "48460/47126/900100/900101", "order", "Poales"),
    (900109, "48460/47126/900100/900101/900108", "species", "Zea mays"),
]
TAXONOMY = InMemoryTaxonLookup.from_taxa(TAXA)

MINIMAL = "name: bees\nroot_taxon: Insecta\nlabel_rank: species\n"


def write_spec(folder: Path, text: str, filename: str = "spec.yaml") -> Path:
    path = folder / filename
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(path: Path) -> str:
    with pytest.raises(DatasetSpecError) as caught:
        load_spec(path)
    return str(caught.value)


# --- the shipped specs ---------------------------------------------------------------------------


def test_shipped_specs_load_and_the_demo_is_what_the_demo_needs():
    specs = load_specs(DATASETS)
    assert set(specs) == {"demo-insects", "ag-pests-example"}

    demo = specs["demo-insects"]
    assert demo.root_taxon.id == INSECTA_TAXON_ID and demo.root_taxon.name == "Insecta"
    assert (demo.label_rank, demo.quality_grades, demo.licenses) == ("species", ("research",), LICENSES)
    assert (demo.image_size, demo.min_per_class, demo.seed) == ("small", 10, 0)
    assert demo.split.ratios == (0.7, 0.15, 0.15) and demo.split.group_by == "observation"
    assert demo.include_taxa == () and demo.exclude_taxa == ()

    pests = specs["ag-pests-example"]
    assert pests.label_rank == "species" and len(pests.include_taxa) >= 10
    assert all(ref.name and len(ref.name.split()) == 2 for ref in pests.include_taxa)  # binomials
    for spec in specs.values():
        assert resolve_taxon(spec.root_taxon, TAXONOMY).taxon_id == INSECTA_TAXON_ID
        assert spec.source_path.endswith(f"{spec.name}.yaml")


def test_a_minimal_spec_gets_the_documented_defaults(tmp_path):
    spec = load_spec(write_spec(tmp_path, MINIMAL))
    assert spec.source == "inaturalist"
    assert spec.quality_grades == ("research",)
    assert spec.licenses == LICENSES
    assert spec.image_size == "medium" and spec.resize is None
    assert spec.split.ratios == (0.7, 0.15, 0.15) and spec.split.group_by == "observation"
    assert (spec.min_per_class, spec.max_per_class, spec.max_photos_per_observation, spec.seed) == (1, None, None, 0)


def test_choices_are_matched_case_insensitively_and_stored_canonically(tmp_path):
    text = MINIMAL.replace("species", "Species") + (
        "licenses: [cc-by, CC0, Cc-By]\nquality_grades: [Needs_ID, research]\nimage_size: SMALL\n"
        "split: {train: 0.8, val: 0.1, test: 0.1, group_by: Observer}\n"
    )
    spec = load_spec(write_spec(tmp_path, text))
    assert spec.label_rank == "species"
    assert spec.licenses == ("CC0", "CC-BY")
    assert spec.quality_grades == ("research", "needs_id")
    assert spec.image_size == "small" and spec.split.group_by == "observer"


# --- validation messages: file, field, problem, fix ----------------------------------------------

ERROR_CASES = {
    "unknown field with a suggestion": (
        "name: bees\nroot_taxon: Insecta\nlable_rank: species\n",
        ["lable_rank: unknown field 'lable_rank'", "did you mean 'label_rank'?", "root_taxon, label_rank, include_taxa"],
    ),
    "missing field": (
        "name: bees\nroot_taxon: Insecta\n",
        ["label_rank: this required field is missing", "add `label_rank:`"],
    ),
    "bad rank": (
        MINIMAL.replace("label_rank: species", "label_rank: subspecies"),
        ["label_rank: 'subspecies' is not a main rank", "one of " + ", ".join(MAIN_RANKS)],
    ),
    "misspelt rank": (MINIMAL.replace("label_rank: species", "label_rank: speces"), ["did you mean 'species'?"]),
    "bad license": (
        MINIMAL + "licenses: [CC0, CC-BY-XYZ]\n",
        ["licenses[1]: 'CC-BY-XYZ' is not a license the bucket exports", "one of " + ", ".join(LICENSES)],
    ),
    "no license": (MINIMAL + "licenses: []\n", ["licenses: the list is empty", "name at least one of CC0"]),
    "ratios not adding up to one": (
        MINIMAL + "split: {train: 0.7, val: 0.2, test: 0.2}\n",
        ["split: the ratios add up to 1.1, not 1", "Fix: make train + val + test add up to 1"],
    ),
    "negative ratio": (
        MINIMAL + "split: {train: 0.9, val: -0.1, test: 0.2}\n",
        ["split.val: input should be greater than or equal to 0, got -0.1", "use a number of at least 0"],
    ),
    "unknown grouping": (MINIMAL + "split: {group_by: user}\n", ["split.group_by: 'user' is not a grouping", "observation, observer"]),
    "min above max": (
        MINIMAL + "min_per_class: 50\nmax_per_class: 20\n",
        ["max_per_class: max_per_class (20) is less than min_per_class (50)", "min_per_class <= max_per_class"],
    ),
    "quoted number": (MINIMAL + "seed: '1'\n", ["seed: input should be a valid integer, got '1'", "write a whole number"]),
    "bad image size": (MINIMAL + "image_size: huge\n", ["image_size: 'huge' is not an iNaturalist image size", ", ".join(IMAGE_SIZES)]),
    "upscaling resize": (
        MINIMAL + "image_size: small\nresize: {shorter_side: 300}\n",
        ["resize.shorter_side: shorter_side 300 is larger than", "upscaled", "larger image_size (original, large, medium)"],
    ),
    "unknown taxon field": (MINIMAL + "include_taxa: [{nmae: Apis}]\n", ["include_taxa[0].nmae: unknown field", "did you mean 'name'?"]),
    "taxon listed twice": (
        MINIMAL + "include_taxa: [Apis, Bombus, Apis]\n",
        ["include_taxa[2]: Apis is already given as include_taxa[0]", "remove one of the two"],
    ),
    "split not a mapping": (MINIMAL + "split: 0.7\n", ["split: expected a mapping, got 0.7", "train, val, test, group_by"]),
    "repeated key": (MINIMAL + "seed: 1\nseed: 2\n", ["yaml: not valid YAML at line 5", "the key 'seed' appears twice"]),
    "bad YAML": (MINIMAL + "split: {train: 0.7\n", ["yaml: not valid YAML", "Fix: correct the YAML"]),
    "not a mapping": ("- bees\n- wasps\n", ["yaml: expected a mapping of fields, got a list", "root_taxon"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_each_validation_error_names_the_file_field_problem_and_fix(tmp_path, case):
    text, fragments = ERROR_CASES[case]
    path = write_spec(tmp_path, text)
    message = spec_error(path)
    assert f"{path}: " in message and "Fix: " in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "pydantic" not in message and "errors.pydantic.dev" not in message


@pytest.mark.parametrize("name", ["Demo Insects", "a|b", "a,b", "pests[0]", "a...b", "-leading", "", "x" * 65])
def test_names_that_are_not_partition_keys_are_rejected(tmp_path, name):
    message = spec_error(write_spec(tmp_path, MINIMAL.replace("name: bees", f"name: {name!r}")))
    assert "name: " in message and "is not a valid dataset name" in message
    assert "lowercase letters, digits, '-' or '_'" in message


def test_several_problems_are_reported_together(tmp_path):
    path = write_spec(tmp_path, "name: Bees\nroot_taxon: Insecta\nlabel_rank: specie\nseed: -1\n")
    with pytest.raises(DatasetSpecError) as caught:
        load_spec(path)
    assert [p.field for p in caught.value.problems] == [("name",), ("label_rank",), ("seed",)]
    assert str(caught.value).startswith("3 problems")


def test_load_specs_rejects_two_files_with_one_name_naming_both(tmp_path):
    first = write_spec(tmp_path, MINIMAL, "a.yaml")
    second = write_spec(tmp_path, MINIMAL, "b.yml")
    with pytest.raises(DatasetSpecError) as caught:
        load_specs(tmp_path)
    message = str(caught.value)
    assert f"{second}: name: the name 'bees' is already used by {first}" in message
    assert "rename the dataset in one of" in message


def test_load_specs_reports_the_problems_of_every_file(tmp_path):
    write_spec(tmp_path, MINIMAL, "good.yaml")
    bad_rank = write_spec(tmp_path, MINIMAL.replace("name: bees", "name: one").replace("species", "tribe"), "one.yaml")
    bad_field = write_spec(tmp_path, MINIMAL.replace("name: bees", "name: two") + "colour: blue\n", "two.yaml")
    write_spec(tmp_path, "not a spec", "notes.txt")
    with pytest.raises(DatasetSpecError) as caught:
        load_specs(tmp_path)
    assert [p.source for p in caught.value.problems] == [str(bad_rank), str(bad_field)]


# --- taxon resolution -----------------------------------------------------------------------------


def test_a_taxon_resolves_by_name_by_id_or_both():
    insecta = resolve_taxon("Insecta", TAXONOMY)
    assert insecta.taxon_id == 47158 and insecta.rank == "class"
    assert insecta.lineage == "Animalia > Arthropoda > Insecta"
    assert resolve_taxon(47158, TAXONOMY) == insecta == resolve_taxon({"id": 47158, "name": "insecta"}, TAXONOMY)


def test_an_ambiguous_name_lists_the_candidates_with_their_paths():
    with pytest.raises(DatasetSpecError) as caught:
        resolve_taxon("Morus", TAXONOMY)
    message = str(caught.value)
    assert "the name 'Morus' is ambiguous: 2 taxa have it" in message
    assert "id 900003 (genus): Animalia > Chordata > Aves > Suliformes > Sulidae > Morus" in message
    assert "id 900104 (genus): Plantae > Tracheophyta > Magnoliopsida > Rosales > Moraceae > Morus" in message
    assert "\n    Fix: say which one you mean by its id" in message
    assert message.startswith("taxon Morus: the name 'Morus' is ambiguous")
    assert resolve_taxon(900104, TAXONOMY).lineage.startswith("Plantae")


def test_a_homonym_inside_the_root_is_not_ambiguous_there():
    insecta = resolve_taxon("Insecta", TAXONOMY)
    assert resolve_taxon("Pieris", TAXONOMY, within=insecta).taxon_id == 900011
    with pytest.raises(DatasetSpecError, match="'Pieris' is ambiguous"):
        resolve_taxon("Pieris", TAXONOMY)


def test_a_rank_picks_between_taxa_of_one_name_and_different_ranks():
    with pytest.raises(DatasetSpecError) as caught:
        resolve_taxon("Bombus", TAXONOMY)
    assert "or by rank ({name: Bombus, rank: genus})" in str(caught.value)
    assert resolve_taxon({"name": "Bombus", "rank": "genus"}, TAXONOMY).taxon_id == 900021
    assert resolve_taxon({"name": "Bombus", "rank": "subgenus"}, TAXONOMY).taxon_id == 900022


@pytest.mark.parametrize(
    ("ref", "fragments"),
    [
        ("Insectaa", ["no taxon is named 'Insectaa'", "check the spelling of the scientific name"]),
        (123456789, ["no taxon has id 123456789", "https://www.inaturalist.org/taxa/123456789"]),
        ({"id": 47158, "name": "Aves"}, ["id 47158 is Insecta, not Aves", "so that they agree"]),
        ({"name": "Morus", "rank": "family"}, ["no family is named 'Morus'", "id 900003 (genus)"]),
    ],
)
def test_unknown_or_contradictory_taxa_are_rejected(ref, fragments):
    with pytest.raises(DatasetSpecError) as caught:
        resolve_taxon(ref, TAXONOMY)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_resolve_spec_taxa_resolves_lists_inside_the_root(tmp_path):
    spec = load_spec(write_spec(tmp_path, MINIMAL + "include_taxa: [Pieris, Bombus terrestris]\nexclude_taxa: [900012]\n"))
    resolved = resolve_spec_taxa(spec, TAXONOMY)
    assert resolved.root.taxon_id == 47158
    assert [t.taxon_id for t in resolved.include] == [900011, 900023]
    assert [t.name for t in resolved.exclude] == ["Pieris rapae"]


def test_resolve_spec_taxa_reports_every_problem_with_file_and_field(tmp_path):
    path = write_spec(
        tmp_path, MINIMAL.replace("label_rank: species", "label_rank: class") + "include_taxa: [Pieris, Zea mays, Bombuss]\n"
    )
    with pytest.raises(DatasetSpecError) as caught:
        resolve_spec_taxa(load_spec(path), TAXONOMY)
    problems = {p.field: p for p in caught.value.problems}
    assert set(problems) == {("label_rank",), ("include_taxa", 1), ("include_taxa", 2)}
    assert all(p.source == str(path) for p in problems.values())
    assert "'class' is not below root_taxon Insecta (class)" in problems[("label_rank",)].problem
    assert "order, family, genus, species" in problems[("label_rank",)].fix
    assert "Zea mays is not under root_taxon Insecta" in problems[("include_taxa", 1)].problem
    assert "no taxon is named 'Bombuss'" in problems[("include_taxa", 2)].problem
    assert f"{path}: include_taxa[1]: Zea mays is not under root_taxon" in str(caught.value)


def test_an_ambiguous_root_in_a_spec_names_the_file_and_field(tmp_path):
    path = write_spec(tmp_path, MINIMAL.replace("root_taxon: Insecta", "root_taxon: Morus"))
    with pytest.raises(DatasetSpecError) as caught:
        resolve_spec_taxa(load_spec(path), TAXONOMY)
    assert str(caught.value).startswith(f"{path}: root_taxon: the name 'Morus' is ambiguous")


# --- spec_hash --------------------------------------------------------------------------------------

BLOCK = """\
# comments do not count
name: pests
root_taxon: {id: 47158, name: Insecta}
label_rank: species
include_taxa:
  - Popillia japonica
  - {id: 81923}
licenses: [CC0, CC-BY]
split:
  train: 0.8
  val: 0.1
  test: 0.1
seed: 3
"""

SAME_IN_OTHER_WORDS = """\
seed: 3
split: {test: .1, val: 0.10, train: 0.8, group_by: observation}
licenses: [cc-by, cc0, CC0]
include_taxa: [81923, {name: '  Popillia   japonica '}]
label_rank: Species
quality_grades: [research]
root_taxon: {name: Insecta, id: 47158}
source: iNaturalist
image_size: medium
name: pests
"""


def test_spec_hash_ignores_key_order_formatting_spelling_and_stated_defaults(tmp_path):
    first = load_spec(write_spec(tmp_path, BLOCK, "a.yaml"))
    second = load_spec(write_spec(tmp_path, SAME_IN_OTHER_WORDS, "b.yaml"))
    assert spec_hash(first) == spec_hash(second)
    assert len(spec_hash(first)) == 64 and int(spec_hash(first), 16) >= 0
    # Pinned: a change to the normalisation changes every dataset's identity, so it must be deliberate.
    assert spec_hash(first) == "376ec6ea8edd4ffb8ce14046ba0ed3765a96e72395d0f25358c04c33952c1d99"


@pytest.mark.parametrize(
    "change", [("seed: 3", "seed: 4"), ("train: 0.8\n  val: 0.1", "train: 0.7\n  val: 0.2"), ("[CC0, CC-BY]", "[CC0]")]
)
def test_spec_hash_changes_when_the_dataset_changes(tmp_path, change):
    before = load_spec(write_spec(tmp_path, BLOCK, "a.yaml"))
    after = load_spec(write_spec(tmp_path, BLOCK.replace(*change), "b.yaml"))
    assert spec_hash(before) != spec_hash(after)
