"""Train / val / test splits: stratified by class, grouped, deterministic and stable across snapshots.

Rules, per class (a class is one ``label``):

- **Grouping.** Photos are assigned by group (``group_key``: an observation, or an observer), so the
  photos of one group never straddle splits, in any class.
- **Targets.** A class with ``n`` groups is meant to have ``ratio × n`` groups in each split, rounded
  by largest remainder so that the counts add up to ``n``; equal remainders are broken by a seeded
  hash of the label, so no split is favoured across classes. A class with 3 to 5 groups gets exactly
  one group in each split with a positive ratio except the largest (``train``), which gets the rest.
  A class with fewer than 3 groups is dropped and returned in ``dropped_classes``.
- **Order.** Groups are ordered by ``blake2b(group_key, key=seed)``, never by input row order, so the
  same input in any order gives the same splits.

**Stability across snapshots.** ``previous`` is the last version's ``photo_id -> split``:

1. A group with at least one photo in ``previous`` keeps that split; its new photos join it. This holds
   even when the group's label changed (relabelled observation): the group is fixed where it is and
   counts toward its new class like any group already in that split.
2. New groups (no photo in ``previous``) fill their class toward the targets, deficit first: splits at
   or over target get none, the largest deficits are filled first down to a common level, and the
   new groups take the splits in hash order. A class that has only new groups gets its targets exactly.
3. So a kept photo moves only if ``previous`` put photos of one group into different splits (possible
   only when the grouping itself changed, e.g. observation -> observer). The group then takes the
   split most of its kept photos had (ties: test, then val, then train, so evaluation sets are not
   raided), and the photos that moved are counted in ``moved_photos``.

When groups span classes (observer grouping), per-class counts can only be met approximately: such
groups are placed first, one by one in hash order, each into the split with the largest summed
relative deficit over its classes; single-class groups then fill the remaining deficits exactly as
above. With observation grouping every group has one class and the targets are met exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
GROUPINGS = ("observation", "observer")
MIN_GROUPS_PER_CLASS = 3
SMALL_CLASS_MAX_GROUPS = 5
RATIO_TOLERANCE = 1e-6

PHOTO_COLUMNS = ("photo_id", "label", "group_key")
PREVIOUS_COLUMNS = ("photo_id", "split")

_UNASSIGNED = -1


@dataclass(frozen=True)
class SplitResult:
    #: photo_id, split (categorical over SPLITS); sorted by photo_id; photos of dropped classes left out.
    assignments: pd.DataFrame
    #: (label, number of groups) of each class with fewer than MIN_GROUPS_PER_CLASS groups.
    dropped_classes: list[tuple[Any, int]]
    #: label, groups, photos, then ``{split}_groups`` and ``{split}_photos`` for each split; sorted by label.
    per_class_counts: pd.DataFrame
    #: kept photos whose split changed (only when ``previous`` split a group; see the module notes).
    moved_photos: int = 0


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """The ratios, one per split, each >= 0 and adding up to 1 within RATIO_TOLERANCE; raises
    ValueError saying what is wrong."""
    values = tuple(float(r) for r in ratios)
    if len(values) != len(SPLITS):
        raise ValueError(f"expected {len(SPLITS)} ratios ({', '.join(SPLITS)}), got {len(values)}")
    for split, value in zip(SPLITS, values):
        if not value >= 0:  # also catches NaN
            raise ValueError(f"the {split} ratio is {value}, but ratios cannot be negative")
    total = sum(values)
    if abs(total - 1) > RATIO_TOLERANCE:
        raise ValueError(f"the ratios add up to {total:.6g}, not 1")
    return values


def assign_splits(
    df: pd.DataFrame,
    *,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    previous: pd.DataFrame | None = None,
) -> SplitResult:
    """Assign every photo of ``df`` (photo_id, label, group_key) to a split; see the module notes."""
    try:
        ratio = np.array(check_ratios(ratios))
    except ValueError as error:
        raise ValueError(
            f"ratios {tuple(ratios)}: {error}. "
            f"Fix: pass one number >= 0 per split ({', '.join(SPLITS)}) adding up to 1, e.g. (0.7, 0.15, 0.15)"
        ) from None
    ratio = ratio / ratio.sum()
    _check_frame(df, PHOTO_COLUMNS, "df")
    label_code, labels = pd.factorize(df["label"], sort=False)
    group_code, group_keys = pd.factorize(df["group_key"], sort=False)
    n_classes, n_groups = len(labels), len(group_keys)

    # Each (class, group) pair once: a class's groups, and a group's classes.
    pair = pd.unique(label_code.astype(np.int64) * max(n_groups, 1) + group_code)
    pair_class, pair_group = pair // max(n_groups, 1), pair % max(n_groups, 1)
    groups_per_class = np.bincount(pair_class, minlength=n_classes)
    kept_class = groups_per_class >= MIN_GROUPS_PER_CLASS
    label_values = labels.tolist()  # plain Python values for the report
    dropped = sorted(
        ((label_values[c], int(groups_per_class[c])) for c in np.flatnonzero(~kept_class)), key=lambda item: str(item[0])
    )
    kept_pair = kept_class[pair_class]
    pair_class, pair_group = pair_class[kept_pair], pair_group[kept_pair]
    kept_row = kept_class[label_code]

    group_split, moved_row = _previous_group_splits(df, previous, kept_row, group_code, n_groups)
    tie_rank = _split_tie_ranks(labels, seed)
    target = _targets(groups_per_class, ratio, tie_rank)

    classes_per_group = np.bincount(pair_group, minlength=n_groups)
    new_group = group_split == _UNASSIGNED
    placed = _count_by_class_and_split(pair_class, group_split[pair_group], n_classes)
    group_hash = np.zeros((n_groups, 2), dtype=np.uint64)
    needs_hash = np.flatnonzero(new_group & (classes_per_group > 0))
    group_hash[needs_hash] = _keyed_hash(group_keys[needs_hash].tolist(), seed, b"group")

    multi_class_new = new_group & (classes_per_group > 1)
    if multi_class_new.any():
        groups = np.flatnonzero(multi_class_new)
        _place_multi_class_groups(groups, pair_class, pair_group, group_hash, target, placed, group_split)
    single_class_new = new_group[pair_group] & (classes_per_group[pair_group] == 1)
    _place_single_class_groups(
        pair_class[single_class_new], pair_group[single_class_new], group_hash, target - placed, tie_rank, group_split
    )

    row_split = group_split[group_code[kept_row]]
    moved_photos = int(moved_row.sum())
    assignments = pd.DataFrame(
        {
            "photo_id": df["photo_id"].to_numpy()[kept_row],
            "split": pd.Categorical.from_codes(row_split, categories=list(SPLITS)),
        }
    )
    assignments = assignments.sort_values("photo_id", kind="stable", ignore_index=True)
    counts = _per_class_counts(labels, kept_class, pair_class, group_split[pair_group], label_code[kept_row], row_split)
    return SplitResult(assignments, dropped, counts, moved_photos)


def _check_frame(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {missing} (it has {list(frame.columns)}). "
            f"Fix: pass a DataFrame with {list(columns)}."
        )
    for column in columns:
        nulls = frame[column].isna()
        if nulls.any():
            first = frame.index[nulls.to_numpy()][0]
            raise ValueError(
                f"{what}.{column} is null in {int(nulls.sum())} row(s), e.g. row {first!r}. Fix: drop or fill those rows first."
            )
    repeated = frame["photo_id"].duplicated()
    if repeated.any():
        examples = frame["photo_id"][repeated].unique()[:5].tolist()
        raise ValueError(f"{what}.photo_id repeats {int(repeated.sum())} time(s), e.g. {examples}. Fix: pass one row per photo.")


def _previous_group_splits(
    df: pd.DataFrame, previous: pd.DataFrame | None, kept_row: np.ndarray, group_code: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each group's split from its kept photos (UNASSIGNED for new groups), and which rows moved
    (kept photos whose group went with the majority of another split)."""
    group_split = np.full(n_groups, _UNASSIGNED, dtype=np.int64)
    if previous is None or previous.empty:
        return group_split, np.zeros(len(df), dtype=bool)
    _check_frame(previous, PREVIOUS_COLUMNS, "previous")
    known = previous["split"].astype(str)
    unknown = ~known.isin(SPLITS)
    if unknown.any():
        raise ValueError(
            f"previous.split holds {sorted(set(known[unknown]))[:5]}, not one of {list(SPLITS)}. "
            "Fix: pass the split column of the last version."
        )
    previous_code = pd.Categorical(known, categories=list(SPLITS)).codes.astype(np.int64)
    position = pd.Index(previous["photo_id"]).get_indexer(df["photo_id"])
    row_previous = np.where(position >= 0, previous_code[np.maximum(position, 0)], _UNASSIGNED)
    row_previous[~kept_row] = _UNASSIGNED
    had = row_previous != _UNASSIGNED
    k = len(SPLITS)
    votes = np.bincount(group_code[had] * k + row_previous[had], minlength=n_groups * k).reshape(n_groups, k)
    # Reversed so that ties go to the later split (test, then val): evaluation sets are kept whole.
    majority = k - 1 - np.argmax(votes[:, ::-1], axis=1)
    group_split = np.where(votes.sum(axis=1) > 0, majority, _UNASSIGNED)
    moved = had & (row_previous != group_split[group_code])
    return group_split, moved


def _keyed_hash(keys: Sequence[Any], seed: int, domain: bytes) -> np.ndarray:
    """128-bit blake2b of each ``str(key)`` keyed by the seed, as (n, 2) uint64: stable across
    Python and library versions, so a rebuild with the same seed gives the same splits."""
    key = hashlib.blake2b(str(seed).encode(), digest_size=32).digest()
    digests = b"".join(hashlib.blake2b(str(k).encode(), key=key, person=domain, digest_size=16).digest() for k in keys)
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2).astype(np.uint64)


def _split_tie_ranks(labels: pd.Index, seed: int) -> np.ndarray:
    """(classes, splits): each class's order of preference among splits for exact ties (0 first)."""
    k = len(SPLITS)
    keys = [f"{label}\x1f{split}" for label in labels for split in SPLITS]
    hashes = _keyed_hash(keys, seed, b"split-ties")[:, 0].reshape(len(labels), k)
    return np.argsort(np.argsort(hashes, axis=1, kind="stable"), axis=1, kind="stable")


def _award_one_each(order: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(classes, splits) of 0/1: one to each of the first ``count`` splits of ``order`` (per class,
    split indexes in the order they are served)."""
    award = np.zeros(order.shape, dtype=np.int64)
    np.put_along_axis(award, order, (np.arange(order.shape[1]) < count[:, None]).astype(np.int64), axis=1)
    return award


def _targets(groups_per_class: np.ndarray, ratio: np.ndarray, tie_rank: np.ndarray) -> np.ndarray:
    """(classes, splits) target group counts: largest remainder, or the small-class rule."""
    # Rounded so that float noise (4.35 - 4 != 1.35 - 1) does not break ties between remainders.
    exact = np.round(groups_per_class[:, None] * ratio[None, :], 9)
    base = np.floor(exact).astype(np.int64)
    remainder = np.round(exact - base, 9)
    # Larger remainder first; equal remainders in the class's tie order.
    target = base + _award_one_each(np.lexsort((tie_rank, -remainder), axis=1), groups_per_class - base.sum(axis=1))

    main = int(np.argmax(ratio))
    small_rule = (ratio > 0).astype(np.int64)
    small_rule[main] = 0
    small = (groups_per_class >= MIN_GROUPS_PER_CLASS) & (groups_per_class <= SMALL_CLASS_MAX_GROUPS)
    target[small] = small_rule
    target[small, main] = groups_per_class[small] - small_rule.sum()
    return target


def _fill_deficits(deficit: np.ndarray, n_new: np.ndarray, tie_rank: np.ndarray) -> np.ndarray:
    """(classes, splits): how many of each class's ``n_new`` new groups go to each split.

    Deficit first: with P = max(deficit, 0), find the lowest whole level L such that filling every
    split down to L (``max(P - L, 0)``) needs at most ``n_new`` groups; the few left over go one
    each to the splits still at level L, in the class's tie order. Since the deficits add up to
    ``n_new`` (targets add up to all groups), P adds up to at least ``n_new`` and this always fits.
    """
    want = np.clip(deficit, 0, None)
    low = np.zeros(len(want), dtype=np.int64)
    high = want.max(axis=1, initial=0)
    while (low < high).any():  # binary search, all classes at once
        middle = (low + high) // 2
        fits = np.clip(want - middle[:, None], 0, None).sum(axis=1) <= n_new
        high = np.where(fits, middle, high)
        low = np.where(fits, low, middle + 1)
    quota = np.clip(want - low[:, None], 0, None)
    at_level = (want >= low[:, None]) & (low[:, None] > 0)
    return quota + _award_one_each(np.lexsort((tie_rank, ~at_level), axis=1), n_new - quota.sum(axis=1))


def _place_single_class_groups(
    classes: np.ndarray,
    groups: np.ndarray,
    group_hash: np.ndarray,
    deficit: np.ndarray,
    tie_rank: np.ndarray,
    group_split: np.ndarray,
) -> None:
    """New groups of one class each: every class's quota per split (:func:`_fill_deficits`), taken
    by its new groups in hash order (train first). Updates ``group_split`` in place."""
    quota = _fill_deficits(deficit, np.bincount(classes, minlength=len(deficit)), tie_rank)
    order = np.lexsort((group_hash[groups, 1], group_hash[groups, 0], classes))
    classes, groups = classes[order], groups[order]
    rank_in_class = np.arange(len(classes)) - np.searchsorted(classes, classes)
    bounds = np.cumsum(quota, axis=1)[classes, :-1]
    group_split[groups] = (rank_in_class[:, None] >= bounds).sum(axis=1)


def _place_multi_class_groups(
    groups: np.ndarray,
    pair_class: np.ndarray,
    pair_group: np.ndarray,
    group_hash: np.ndarray,
    target: np.ndarray,
    placed: np.ndarray,
    group_split: np.ndarray,
) -> None:
    """Greedy, in hash order: each group goes to the split whose summed relative deficit over the
    group's classes is largest. Updates ``placed`` and ``group_split`` in place."""
    groups = groups[np.lexsort((group_hash[groups, 1], group_hash[groups, 0]))]
    by_group = np.argsort(pair_group, kind="stable")
    starts = np.searchsorted(pair_group[by_group], groups, side="left")
    stops = np.searchsorted(pair_group[by_group], groups, side="right")
    scale = np.maximum(target, 1)
    for group, start, stop in zip(groups, starts, stops):
        classes = pair_class[by_group[start:stop]]
        score = ((target[classes] - placed[classes]) / scale[classes]).sum(axis=0)
        split = int(np.argmax(score))
        placed[classes, split] += 1
        group_split[group] = split


def _count_by_class_and_split(class_code: np.ndarray, split_code: np.ndarray, n_classes: int) -> np.ndarray:
    """(classes, splits) counts of the rows with a split (unassigned rows are skipped)."""
    k = len(SPLITS)
    has = split_code != _UNASSIGNED
    return np.bincount(class_code[has] * k + split_code[has], minlength=n_classes * k).reshape(n_classes, k)


def _per_class_counts(
    labels: pd.Index,
    kept_class: np.ndarray,
    pair_class: np.ndarray,
    pair_split: np.ndarray,
    row_class: np.ndarray,
    row_split: np.ndarray,
) -> pd.DataFrame:
    groups = _count_by_class_and_split(pair_class, pair_split, len(labels))[kept_class]
    photos = _count_by_class_and_split(row_class, row_split, len(labels))[kept_class]
    table = pd.DataFrame({"label": labels[kept_class], "groups": groups.sum(axis=1), "photos": photos.sum(axis=1)})
    for index, split in enumerate(SPLITS):
        table[f"{split}_groups"] = groups[:, index]
    for index, split in enumerate(SPLITS):
        table[f"{split}_photos"] = photos[:, index]
    return table.sort_values("label", key=lambda column: column.astype(str), kind="stable", ignore_index=True)
