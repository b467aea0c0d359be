"""Identity metrics over synthetic scenes (the scenes: ``edgeyolo.benchmarks.scene``).

``identity_metrics`` counts id switches and fragmentations; ``SimObject`` and ``frames`` are
re-exported for the tracking tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeyolo.benchmarks.scene import SimFrame, SimObject, frames

__all__ = ["IdentityMetrics", "SimFrame", "SimObject", "frames", "identity_metrics"]


@dataclass
class IdentityMetrics:
    switches: int  # a ground-truth object's track id changed from one id to another
    fragments: int  # extra track ids per object, summed (0: one id for its whole life)
    merges: int  # track ids that covered more than one ground-truth object
    tracks: int  # distinct track ids
    untracked: int  # detections of objects without a track id (after their first frames)


def identity_metrics(
    per_frame: list[tuple[list[int], list[int]]], *, warmup: int = 3
) -> IdentityMetrics:
    """From (ground-truth ids, track ids) per frame; -1 track ids are ignored except counted."""
    last: dict[int, int] = {}
    ids_of: dict[int, set[int]] = {}
    gids_of: dict[int, set[int]] = {}
    seen_frames: dict[int, int] = {}
    switches = untracked = 0
    for gids, tids in per_frame:
        for g, t in zip(gids, tids, strict=True):
            seen_frames[g] = seen_frames.get(g, 0) + 1
            if t < 0:
                if seen_frames[g] > warmup:
                    untracked += 1
                continue
            if g in last and last[g] != t:
                switches += 1
            last[g] = t
            ids_of.setdefault(g, set()).add(t)
            gids_of.setdefault(t, set()).add(g)
    return IdentityMetrics(
        switches=switches,
        fragments=sum(len(s) - 1 for s in ids_of.values()),
        merges=sum(1 for s in gids_of.values() if len(s) > 1),
        tracks=len(gids_of),
        untracked=untracked,
    )
