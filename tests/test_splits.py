"""Stratified, grouped, deterministic and snapshot-stable splits (bioasset.splits)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from bioasset.splits import SPLITS, assign_splits

RATIOS = (0.7, 0.15, 0.15)


def make_photos(groups_per_class: dict[str, int], *, seed: int = 0, prefix: str = "obs", first_photo_id: int = 1) -> pd.DataFrame:
    """One row per photo: each class gets that many observations of 1-3 photos each."""
    rng = np.random.default_rng(seed)
    rows = []
    photo_id = first_photo_id
    for label, n_groups in groups_per_class.items():
        for g in range(n_groups):
            for _ in range(int(rng.integers(1, 4))):
                rows.append((photo_id, label, f"{prefix}-{label}-{g}"))
                photo_id += 1
    return pd.DataFrame(rows, columns=["photo_id", "label", "group_key"])


def with_splits(df: pd.DataFrame, result) -> pd.DataFrame:
    return df.merge(result.assignments, on="photo_id", how="inner", validate="one_to_one")


def groups_per_split(photos: pd.DataFrame) -> pd.DataFrame:
    """label x split -> number of distinct groups, computed from the photos themselves."""
    table = photos.groupby(["label", "split"], observed=False)["group_key"].nunique().unstack("split", fill_value=0)
    return table.reindex(columns=list(SPLITS), fill_value=0)


def test_no_group_straddles_splits():
    df = make_photos({f"sp{i}": 6 + 7 * i for i in range(12)})
    photos = with_splits(df, assign_splits(df, ratios=RATIOS, seed=3))
    assert len(photos) == len(df)
    assert photos.groupby("group_key")["split"].nunique().max() == 1


def test_per_class_counts_are_the_ratio_within_one_group_and_sum_exactly():
    sizes = {f"sp{i}": n for i, n in enumerate([6, 7, 9, 10, 13, 20, 21, 33, 57, 100, 101, 999])}
    df = make_photos(sizes)
    result = assign_splits(df, ratios=RATIOS, seed=0)
    counts = groups_per_split(with_splits(df, result))
    for label, n_groups in sizes.items():
        row = counts.loc[label]
        assert row.sum() == n_groups
        for split, ratio in zip(SPLITS, RATIOS):
            assert abs(row[split] - ratio * n_groups) < 1, (label, split, row.to_dict())
    reported = result.per_class_counts.set_index("label")
    for split in SPLITS:
        assert (reported[f"{split}_groups"] == counts[split].reindex(reported.index)).all()
    assert reported["photos"].sum() == len(df)


def test_largest_remainder_ties_are_spread_over_splits_not_always_val():
    # 10 groups at 0.7/0.15/0.15 is 7 + 1.5 + 1.5: the extra group goes to val or test, by class.
    df = make_photos({f"sp{i}": 10 for i in range(200)})
    counts = groups_per_split(with_splits(df, assign_splits(df, ratios=RATIOS, seed=0)))
    assert (counts["train"] == 7).all()
    val_extra = int((counts["val"] == 2).sum())
    assert ((counts["val"] + counts["test"]) == 3).all()
    assert 60 <= val_extra <= 140, val_extra


@pytest.mark.parametrize("n_groups", [3, 4, 5])
def test_classes_of_three_to_five_groups_get_exactly_one_val_and_one_test_group(n_groups):
    df = make_photos({"small": n_groups, "big": 40})
    counts = groups_per_split(with_splits(df, assign_splits(df, ratios=RATIOS, seed=1)))
    assert counts.loc["small"].to_dict() == {"train": n_groups - 2, "val": 1, "test": 1}


def test_small_class_rule_skips_a_split_whose_ratio_is_zero():
    df = make_photos({"small": 4})
    counts = groups_per_split(with_splits(df, assign_splits(df, ratios=(0.8, 0.2, 0.0))))
    assert counts.loc["small"].to_dict() == {"train": 3, "val": 1, "test": 0}


def test_classes_with_fewer_than_three_groups_are_dropped_and_reported():
    df = make_photos({"one": 1, "two": 2, "three": 3, "many": 20})
    result = assign_splits(df)
    assert result.dropped_classes == [("one", 1), ("two", 2)]
    kept_labels = set(df.merge(result.assignments, on="photo_id")["label"])
    assert kept_labels == {"three", "many"}
    assert set(result.per_class_counts["label"]) == {"three", "many"}


def test_same_seed_gives_the_same_splits_in_any_row_order_and_another_seed_differs():
    df = make_photos({f"sp{i}": 5 + 3 * i for i in range(30)})
    first = assign_splits(df, seed=7)
    shuffled = assign_splits(df.sample(frac=1, random_state=11).reset_index(drop=True), seed=7)
    pd.testing.assert_frame_equal(first.assignments, shuffled.assignments)
    pd.testing.assert_frame_equal(first.per_class_counts, shuffled.per_class_counts)
    assert first.assignments["photo_id"].is_monotonic_increasing
    other_seed = assign_splits(df, seed=8)
    assert (first.assignments["split"] != other_seed.assignments["split"]).any()


def next_snapshot(df: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, set[str]]:
    """The next snapshot: 5% of photos removed (some whole groups), groups relabelled, 10% new
    photos (new groups in old classes, a new class, new photos in old groups)."""
    groups = df["group_key"].unique()
    removed_groups = set(rng.choice(groups, size=len(groups) // 30, replace=False))
    kept = df[~df["group_key"].isin(removed_groups)]
    kept = kept.drop(kept.sample(frac=0.02, random_state=1).index)
    remaining = kept["group_key"].unique()
    relabelled = set(rng.choice(remaining, size=len(remaining) // 40, replace=False))
    labels = sorted(df["label"].unique())
    new_label = {g: labels[int(rng.integers(len(labels)))] for g in relabelled}
    kept = kept.assign(label=[new_label.get(g, l) for g, l in zip(kept["group_key"], kept["label"])])
    next_id = int(df["photo_id"].max()) + 1
    added_groups = make_photos(
        {label: int(rng.integers(0, 8)) for label in labels} | {"newcomer": 12}, seed=5, prefix="new", first_photo_id=next_id
    )
    next_id += len(added_groups)
    joiners = rng.choice(remaining, size=len(df) // 50, replace=True)
    label_of = dict(zip(kept["group_key"], kept["label"]))
    joined = pd.DataFrame(
        {"photo_id": np.arange(next_id, next_id + len(joiners)), "label": [label_of[g] for g in joiners], "group_key": joiners}
    )
    return pd.concat([kept, added_groups, joined], ignore_index=True), relabelled


def test_next_snapshot_keeps_every_kept_photo_in_its_split_and_stays_near_the_ratios():
    rng = np.random.default_rng(42)
    df = make_photos({f"sp{i}": int(n) for i, n in enumerate(rng.integers(3, 80, 60))})
    before = assign_splits(df, ratios=RATIOS, seed=9)
    after_df, relabelled = next_snapshot(df, rng)
    after = assign_splits(after_df, ratios=RATIOS, seed=9, previous=before.assignments)

    both = before.assignments.merge(after.assignments, on="photo_id", suffixes=("_before", "_after"))
    assert len(both) > 0.9 * len(df)
    assert (both["split_before"] == both["split_after"]).all()
    assert after.moved_photos == 0

    photos = with_splits(after_df, after)
    assert photos.groupby("group_key")["split"].nunique().max() == 1
    old_split = dict(zip(with_splits(df, before)["group_key"], with_splits(df, before)["split"]))
    joined_old_groups = photos[photos["group_key"].isin(old_split) & ~photos["photo_id"].isin(df["photo_id"])]
    assert len(joined_old_groups) > 0
    assert (joined_old_groups["split"] == joined_old_groups["group_key"].map(old_split)).all()
    assert relabelled and all(g in set(photos["group_key"]) for g in relabelled)

    # A class new in this snapshot has only new groups: its targets are met exactly.
    newcomer = groups_per_split(photos).loc["newcomer"]
    assert all(abs(newcomer[s] - r * 12) < 1 for s, r in zip(SPLITS, RATIOS))
    # Overall, and per class within what the fixed (kept, removed, relabelled) groups allow.
    totals = groups_per_split(photos).sum()
    for split, ratio in zip(SPLITS, RATIOS):
        assert abs(totals[split] / totals.sum() - ratio) < 0.01
    counts = groups_per_split(photos)
    churn = (
        df[~df["group_key"].isin(set(after_df["group_key"])) | df["group_key"].isin(relabelled)]
        .groupby("label")["group_key"].nunique()
        .add(photos[photos["group_key"].isin(relabelled)].groupby("label")["group_key"].nunique(), fill_value=0)
    )
    for label, row in counts.iterrows():
        n_groups = row.sum()
        if n_groups < 6:
            continue
        allowed = 1 + churn.get(label, 0)
        for split, ratio in zip(SPLITS, RATIOS):
            assert abs(row[split] - ratio * n_groups) <= allowed, (label, row.to_dict(), allowed)


def test_a_previous_assignment_that_split_a_group_is_resolved_by_majority_and_reported():
    df = make_photos({"a": 10, "b": 10})
    first = assign_splits(df)
    group = df["group_key"].iloc[0]
    members = df.loc[df["group_key"] == group, "photo_id"]
    previous = first.assignments.copy()
    previous.loc[previous["photo_id"] == members.iloc[0], "split"] = "test"
    extra = pd.DataFrame({"photo_id": [10_000, 10_001], "label": ["a", "a"], "group_key": [group, group]})
    previous = pd.concat(
        [previous, pd.DataFrame({"photo_id": [10_000, 10_001], "split": ["val", "val"]})], ignore_index=True
    )
    second = assign_splits(pd.concat([df, extra], ignore_index=True), previous=previous)
    splits = second.assignments.set_index("photo_id")["split"]
    group_photos = list(members) + [10_000, 10_001]
    assert splits.loc[group_photos].nunique() == 1
    before = previous.set_index("photo_id")["split"].loc[group_photos]
    assert second.moved_photos == int((before != splits.loc[group_photos].iloc[0]).sum()) > 0


def test_observer_groups_spanning_classes_never_straddle_and_keep_per_class_ratios_closely():
    rng = np.random.default_rng(3)
    n = 20_000
    df = pd.DataFrame(
        {
            "photo_id": np.arange(n),
            "label": [f"sp{k}" for k in rng.integers(0, 40, n)],
            "group_key": rng.integers(0, 3_000, n),
        }
    )
    photos = with_splits(df, assign_splits(df, ratios=RATIOS, seed=2))
    assert photos.groupby("group_key")["split"].nunique().max() == 1
    # An observer of several species counts once in each of their classes.
    counts = groups_per_split(photos)
    share = counts.div(counts.sum(axis=1), axis=0)
    for split, ratio in zip(SPLITS, RATIOS):
        assert (share[split] - ratio).abs().max() < 0.02, share.describe()


def test_bad_input_is_rejected_with_the_problem_and_the_fix():
    df = make_photos({"a": 5})
    with pytest.raises(ValueError, match=r"add up to 1\.1.*Fix"):
        assign_splits(df, ratios=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match=r"ratios cannot be negative"):
        assign_splits(df, ratios=(1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['group_key'\].*Fix"):
        assign_splits(df.drop(columns="group_key"))
    with pytest.raises(ValueError, match=r"photo_id repeats 1 time.*Fix"):
        assign_splits(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match=r"label is null.*Fix"):
        assign_splits(df.assign(label=df["label"].where(df.index > 0)))
    with pytest.raises(ValueError, match=r"previous.split holds \['training'\].*Fix"):
        assign_splits(df, previous=pd.DataFrame({"photo_id": [1], "split": ["training"]}))


def test_empty_input_gives_empty_result():
    result = assign_splits(pd.DataFrame({"photo_id": [], "label": [], "group_key": []}))
    assert result.assignments.empty and result.dropped_classes == [] and result.per_class_counts.empty


def test_two_hundred_thousand_photos_run():
    rng = np.random.default_rng(0)
    n_groups = 100_000
    group_label = rng.zipf(1.4, n_groups) % 2_000
    group = rng.integers(0, n_groups, 200_000)
    df = pd.DataFrame({"photo_id": np.arange(200_000), "label": group_label[group], "group_key": [f"o{g}" for g in group]})
    started = time.perf_counter()
    result = assign_splits(df, seed=1)
    elapsed = time.perf_counter() - started
    print(f"assign_splits: {len(df)} photos in {elapsed:.2f} s")
    assert len(result.assignments) + sum(
        int((df["label"] == label).sum()) for label, _ in result.dropped_classes
    ) == len(df)
