"""``bioasset snapshots check``: what ``inat_snapshot_sensor`` would see, without Dagster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bioasset.snapshots import SnapshotCursor, SnapshotDecision, SnapshotObservation, decide, observe_bucket


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    snapshots = subparsers.add_parser("snapshots", help="iNaturalist metadata snapshots in the open-data bucket")
    commands = snapshots.add_subparsers(dest="snapshots_command", metavar="SUBCOMMAND")
    commands.required = True
    check = commands.add_parser(
        "check",
        help="show what the snapshot sensor would see now",
        description=(
            "HEAD the latest metadata tarball of the open-data bucket and print its ETag, size and "
            "last-modified time, the snapshot date it resolves to and how, whether the release is "
            "half-published, and whether it is new against --cursor. Exit status 1 if there is no latest tarball."
        ),
    )
    check.add_argument("--url", help="bucket root URL (default: BIOASSET_OPEN_DATA_URL, else the local sample bucket)")
    check.add_argument("--endpoint-url", help="S3-compatible endpoint (default: BIOASSET_S3_ENDPOINT_URL)")
    check.add_argument("--cursor", type=_cursor_argument, help="the sensor's cursor (JSON) to compare against")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    # Imported here so that `bioasset --help` does not pay for importing Dagster.
    from bioasset.resources.open_data import OpenDataBucket

    bucket = OpenDataBucket(url=args.url, endpoint_url=args.endpoint_url)
    fs, root = bucket.filesystem()
    try:
        observation = observe_bucket(fs, root, url=bucket.resolved_url())
    except PermissionError as error:
        print(f"bioasset snapshots check: {error}", file=sys.stderr)
        return 1
    decision = decide(observation, args.cursor)
    if args.json:
        print(json.dumps(check_report(observation, decision), indent=2))
    else:
        print(format_check_report(observation, decision, has_cursor=args.cursor is not None))
    return 0 if observation.latest else 1


def check_report(observation: SnapshotObservation, decision: SnapshotDecision) -> dict[str, Any]:
    return {
        **observation.to_dict(),
        "new": decision.is_new,
        "reason": decision.reason,
        "cursor": json.loads(decision.cursor.to_json()) if decision.cursor else None,
    }


def format_check_report(observation: SnapshotObservation, decision: SnapshotDecision, *, has_cursor: bool) -> str:
    latest = observation.latest
    lines = [f"bucket:          {observation.url}"]
    if latest is not None:
        lines += [
            f"latest tarball:  {latest.path}",
            f"  etag:          {latest.etag or '(none: identity is size + modification time)'}",
            f"  size:          {latest.size} bytes",
            f"  last modified: {latest.last_modified.isoformat()}",
            f"snapshot:        {observation.snapshot_key}, from {observation.resolved_by}"
            + (f": {observation.dated_tarball}" if observation.dated_tarball else ""),
            f"half-published:  {'yes' if observation.half_published else 'no'}",
        ]
    against = "the cursor" if has_cursor else "no cursor (a first tick)"
    lines.append(f"new:             {'yes' if decision.is_new else 'no'}, against {against}")
    lines.append(f"sensor would:    {'request' if decision.is_new else 'skip'}: {decision.reason}")
    if decision.cursor is not None:
        lines.append(f"cursor after:    {decision.cursor.to_json()}")
    return "\n".join(lines)


def _cursor_argument(text: str) -> SnapshotCursor | None:
    try:
        return SnapshotCursor.from_json(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
