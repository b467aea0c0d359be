"""One tracked model on one camera: tracker + zones + lines + lifecycle -> ids and events.

``ObjectTracker.step`` takes a frame's ``Detections`` and returns the track id of every
detection row (-1: not part of a confirmed track) and the events of that frame, in order:
lifecycle ``new``, zone, line, lifecycle ``update``, lifecycle ``end``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from edgeyolo.events import LineEvent, TrackEvent, ZoneEvent
from edgeyolo.sinks.derive import posture
from edgeyolo.tracking.lifecycle import PostureFilter, TrackRecord
from edgeyolo.tracking.tracker import ByteTracker, Track, TrackState
from edgeyolo.tracking.zones import Line, LineCounter, Zone, ZoneTracker

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgeyolo.config.tracking import LineConfig, TrackingConfig, ZoneConfig
    from edgeyolo.events import Event
    from edgeyolo.postprocess import Detections

# An improvement of the best score smaller than this is not worth an update event.
_BEST_SCORE_STEP = 0.05


def resolve_points(
    points: Sequence[tuple[float, float]], normalized: bool, width: int, height: int
) -> npt.NDArray[np.float64]:
    """Config points -> source pixels (``k x 2``)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if normalized:
        p = p * np.array([width, height], np.float64)
    return p


class ObjectTracker:
    """Tracks one model's objects on one camera and derives zone, line and lifecycle events."""

    def __init__(
        self,
        camera: str,
        model: str,
        labels: Sequence[str],
        config: TrackingConfig,
        *,
        pose: bool = False,
        zones: Sequence[ZoneConfig] = (),
        lines: Sequence[LineConfig] = (),
    ) -> None:
        self.camera = camera
        self.model = model
        self.labels = list(labels)
        self.config = config
        self.pose = pose
        self._zone_cfg = list(zones)
        self._line_cfg = list(lines)
        self.tracker = ByteTracker(
            high_thresh=config.high_thresh,
            low_thresh=config.low_thresh,
            new_track_thresh=config.new_track_thresh,
            match_iou=config.match_iou,
            min_hits=config.min_hits,
            max_lost_s=config.max_lost_s,
        )
        self.zones = ZoneTracker([])  # made from the config on the first frame
        self.lines = LineCounter([])
        self._resolved = False
        self.records: dict[int, TrackRecord] = {}
        # Objects of each label in each zone, after debounce: (zone, label) -> count.
        self.occupancy: dict[tuple[str, str], int] = {}
        self._spatial = bool(self._zone_cfg or self._line_cfg)
        # Class id -> zone (line) -> counts it, None when every zone (line) counts every
        # label; class ids beyond the labels (a model with more classes than names) use
        # the last row.
        self._zone_ok: npt.NDArray[np.bool_] | None = None
        self._line_ok: npt.NDArray[np.bool_] | None = None
        self._last_class = max(len(self.labels), 1) - 1
        self._log = structlog.get_logger("edgeyolo.tracking").bind(camera=camera, model=model)

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    def _resolve(self, width: int, height: int) -> None:
        """Zones and lines in pixels of this camera's frames (known from the first frame)."""
        zones, lines = [], []
        for z in self._zone_cfg:
            poly = resolve_points(z.points, z.normalized, width, height)
            self._check_inside(f"zone '{z.name}'", poly, width, height)
            labels = None if z.labels is None else frozenset(z.labels)
            zones.append(Zone(z.name, poly, labels, z.min_frames))
        for ln in self._line_cfg:
            pts = resolve_points(ln.points, ln.normalized, width, height)
            self._check_inside(f"line '{ln.name}'", pts, width, height)
            labels = None if ln.labels is None else frozenset(ln.labels)
            a, b = (float(pts[0, 0]), float(pts[0, 1])), (float(pts[1, 0]), float(pts[1, 1]))
            lines.append(Line(ln.name, a, b, labels, ln.min_frames, ln.margin_px))
        self.zones, self.lines = ZoneTracker(zones), LineCounter(lines)
        self._resolved = True
        names = [self.label(i) for i in range(max(len(self.labels), 1))]
        zone_ok, line_ok = self.zones.applies(names), self.lines.applies(names)
        self._zone_ok = None if zone_ok.all() else zone_ok
        self._line_ok = None if line_ok.all() else line_ok
        tr = self.tracker
        tr.add_column("zone_in", len(zones), bool)
        tr.add_column("zone_run", len(zones), np.int32)
        tr.add_column("line_side", len(lines), np.int8)
        tr.add_column("line_run", len(lines), np.int32)

    def _check_inside(self, what: str, pts: npt.NDArray[np.float64], w: int, h: int) -> None:
        out = (pts[:, 0] > w) | (pts[:, 1] > h)
        if out.any():
            x, y = pts[np.flatnonzero(out)[0]]
            self._log.error(
                f"{what} of camera '{self.camera}' has a point outside the {w}x{h} frame; "
                "fix cameras[].zones/lines in the config (or use normalized: true)",
                point=[round(float(x), 1), round(float(y), 1)],
            )

    def step(
        self, dets: Detections, timestamp: float, seq: int, width: int, height: int
    ) -> tuple[npt.NDArray[np.int64], list[Event]]:
        """Track one frame: (track id per detection row, this frame's events)."""
        if not self._resolved:
            self._resolve(width, height)
        up = self.tracker.update(dets.boxes, dets.scores, dets.class_ids, timestamp)
        events: list[Event] = []
        for t in up.confirmed:
            rec = self._record(t, dets)
            events.append(self._lifecycle("new", rec, timestamp, seq))
        tracks = self.tracker.tracks
        # Confirmed tracks seen in this frame: the only ones whose state moves.
        confirmed = TrackState.CONFIRMED
        rows = [i for i, t in enumerate(tracks) if t.det >= 0 and t.state is confirmed]
        if rows and self._spatial:
            events.extend(self._zones_and_lines(rows, dets, timestamp, seq))
        if rows:
            self._observe(rows, dets, timestamp, seq, events)
        for t in up.removed:
            events.extend(self._end(t, timestamp, seq))
        return up.det_track_ids, events

    def _zones_and_lines(
        self, rows: list[int], dets: Detections, timestamp: float, seq: int
    ) -> list[Event]:
        """Step the zone and line state of the tracks seen (``rows`` of the tracker)."""
        tr = self.tracker
        tracks, cols = tr.tracks, tr.columns
        every = len(rows) == len(tracks)  # all of them, in order: no gather/scatter
        # (``take`` with an index array: numpy's cheapest gather for a few rows.)
        idx = np.array(rows, np.intp)
        det = np.array([tracks[i].det for i in rows], np.intp)
        b = dets.boxes.take(det, 0).astype(np.float64)
        # An object's position: the bottom-centre of its box, its feet.
        px, py = (b[:, 0] + b[:, 2]) / 2, b[:, 3]
        events: list[Event] = []
        zs, ls = self.zones, self.lines
        if zs.zones:
            ok = self._applies(self._zone_ok, idx, every)
            flips = _step_rows(
                cols, ("zone_in", "zone_run"), idx, every, lambda s, r: zs.step(s, r, px, py, ok)
            )
            for a, j, entered in flips:
                rec = self.records[tracks[rows[a]].track_id]
                events.append(self._zone(rec, zs.zones[j].name, entered, timestamp, seq))
        if ls.lines:
            ok = self._applies(self._line_ok, idx, every)
            crossings = _step_rows(
                cols, ("line_side", "line_run"), idx, every, lambda s, r: ls.step(s, r, px, py, ok)
            )
            for a, j, d in crossings:
                events.append(self._line(tracks[rows[a]], j, d, timestamp, seq))
        return events

    def _applies(
        self, table: npt.NDArray[np.bool_] | None, idx: npt.NDArray[np.intp], every: bool
    ) -> npt.NDArray[np.bool_] | None:
        """The rows of ``table`` (class -> zone or line) for the tracks ``idx``."""
        if table is None:
            return None
        classes = self.tracker.classes if every else self.tracker.classes.take(idx)
        return table.take(np.minimum(classes, self._last_class), 0)

    def _observe(
        self, rows: list[int], dets: Detections, timestamp: float, seq: int, events: list[Event]
    ) -> None:
        """The records of the tracks seen: box, last seen, scores, posture; updates due."""
        tracks, records = self.tracker.tracks, self.records
        boxes = dets.boxes.tolist()
        keypoints = dets.keypoints if self.pose else None
        step, interval = _BEST_SCORE_STEP, self.config.update_interval_s
        for i in rows:
            t = tracks[i]
            rec = records[t.track_id]
            rec.box = tuple(boxes[t.det])  # (4 floats)
            rec.last_seen = timestamp
            rec.score = t.score
            rec.best_score = max(rec.best_score, t.score)
            if rec.posture is not None and keypoints is not None:
                raw = posture(keypoints[t.det].tolist(), rec.box)
                if rec.posture.step(raw, timestamp):
                    rec.changes.add("posture")
            if not rec.changes:
                if rec.best_score - rec.published_best < step:
                    continue
                if timestamp - rec.published_at < interval:
                    continue
                rec.changes.add("best_score")
            events.append(self._lifecycle("update", rec, timestamp, seq))

    def finish(self, timestamp: float, seq: int) -> list[Event]:
        """End every track (the source ended or the service stops)."""
        events: list[Event] = []
        for t in self.tracker.flush():
            events.extend(self._end(t, timestamp, seq))
        return events

    # ------------------------------------------------------------------ records

    def _record(self, t: Track, dets: Detections) -> TrackRecord:
        box = tuple(float(v) for v in dets.boxes[t.det])
        rec = TrackRecord(
            track_id=t.track_id,
            class_id=t.class_id,
            label=self.label(t.class_id),
            first_seen=t.first_seen,
            last_seen=t.last_seen,
            box=(box[0], box[1], box[2], box[3]),
            score=t.score,
            best_score=t.score,
            posture=PostureFilter(self.config.posture_min_s) if self.pose else None,
        )
        self.records[t.track_id] = rec
        return rec

    def _lifecycle(
        self, kind: Literal["new", "update", "end"], rec: TrackRecord, timestamp: float, seq: int
    ) -> TrackEvent:
        after = rec.snapshot()
        ev = TrackEvent(
            camera=self.camera,
            model=self.model,
            timestamp=timestamp,
            seq=seq,
            kind=kind,
            after=after,
            before=rec.published,
            changes=tuple(sorted(rec.changes)),
        )
        rec.published, rec.published_at, rec.published_best = after, timestamp, rec.best_score
        rec.changes.clear()
        return ev

    def _zone(
        self, rec: TrackRecord, zone: str, entered: bool, timestamp: float, seq: int
    ) -> ZoneEvent:
        key = (zone, rec.label)
        if entered:
            rec.enter(zone)
            self.occupancy[key] = self.occupancy.get(key, 0) + 1
        else:
            rec.leave(zone)
            self.occupancy[key] = max(self.occupancy.get(key, 0) - 1, 0)
        return ZoneEvent(
            camera=self.camera,
            model=self.model,
            timestamp=timestamp,
            seq=seq,
            zone=zone,
            label=rec.label,
            track_id=rec.track_id,
            action="enter" if entered else "leave",
            count=self.occupancy[key],
        )

    def _line(self, t: Track, j: int, direction: int, timestamp: float, seq: int) -> LineEvent:
        counts = self.lines.counts[j]
        return LineEvent(
            camera=self.camera,
            model=self.model,
            timestamp=timestamp,
            seq=seq,
            line=self.lines.lines[j].name,
            label=self.label(t.class_id),
            track_id=t.track_id,
            direction="in" if direction > 0 else "out",
            in_count=counts[0],
            out_count=counts[1],
        )

    def _end(self, t: Track, timestamp: float, seq: int) -> list[Event]:
        rec = self.records.pop(t.track_id, None)
        if rec is None:
            return []
        events: list[Event] = [self._zone(rec, z, False, timestamp, seq) for z in list(rec.zones)]
        rec.changes.discard("zones")
        events.append(self._lifecycle("end", rec, timestamp, seq))
        return events


_R = TypeVar("_R")


def _step_rows(
    cols: dict[str, npt.NDArray[Any]],
    names: tuple[str, str],
    idx: npt.NDArray[np.intp],
    every: bool,
    step: Callable[[npt.NDArray[Any], npt.NDArray[Any]], _R],
) -> _R:
    """``step`` on the two state columns ``names`` of the tracks ``idx`` (every track, in
    order, when ``every``: the columns themselves), which it updates in place; a gathered
    copy is scattered back."""
    first, second = cols[names[0]], cols[names[1]]
    if not every:
        first, second = first.take(idx, 0), second.take(idx, 0)
    out = step(first, second)
    if not every:
        cols[names[0]][idx], cols[names[1]][idx] = first, second
    return out
