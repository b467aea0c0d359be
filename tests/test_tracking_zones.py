"""Zones, lines and lifecycle events on constructed detection sequences, with exact counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeyolo.config import LineConfig, TrackingConfig, ZoneConfig
from edgeyolo.events import LineEvent, TrackEvent, ZoneEvent
from edgeyolo.postprocess import Detections
from edgeyolo.tracking.objects import ObjectTracker

FPS = 15.0
W, H = 960, 540
Path = Callable[[int], tuple[float, float] | None]  # frame -> bottom-centre, None: not seen


def walk(x0: float, y: float, vx: float, first: int = 0, last: int = 10**6) -> Path:
    return lambda f: (x0 + vx * (f - first), y) if first <= f <= last else None


def jitter(x: float, y: float, amp: float, first: int = 0, last: int = 10**6) -> Path:
    return lambda f: (x + (amp if f % 2 else -amp), y) if first <= f <= last else None


def dets_at(paths: list[Path], f: int, size: tuple[float, float] = (30, 80)) -> Detections:
    pts = [p for p in (path(f) for path in paths) if p is not None]
    w, h = size
    boxes = np.array([(x - w / 2, y - h, x + w / 2, y) for x, y in pts], np.float32).reshape(-1, 4)
    n = len(pts)
    return Detections(boxes, np.full(n, 0.9, np.float32), np.zeros(n, np.int32))


def run(ot: ObjectTracker, paths: list[Path], n: int) -> list:
    events = []
    for f in range(n):
        _, evs = ot.step(dets_at(paths, f), 1000.0 + f / FPS, f, W, H)
        events.extend(evs)
    events.extend(ot.finish(1000.0 + n / FPS, n))
    return events


def tracker(zones=(), lines=(), **cfg: object) -> ObjectTracker:
    tc = TrackingConfig(enabled=True, **cfg)  # type: ignore[arg-type]
    return ObjectTracker("cam", "det", ["person"], tc, zones=zones, lines=lines)


DOOR = ZoneConfig(name="door", points=[(400, 200), (600, 200), (600, 500), (400, 500)])


def test_zone_enter_and_leave_are_debounced() -> None:
    """A walker through the zone enters and leaves once; one standing on its edge never does."""
    walker = walk(100, 300, 10)
    edge = jitter(400, 450, 3)  # its feet alternate in/out every frame
    events = run(tracker([DOOR]), [walker, edge], 90)
    zone = [(e.track_id, e.action, e.count, e.seq) for e in events if isinstance(e, ZoneEvent)]
    # Inside for x in [400, 600) = frames 30..49: enters at 32, leaves at 52 (3 frames each).
    assert zone == [(1, "enter", 1, 32), (1, "leave", 0, 52)]


def test_occupancy_counts_and_leave_on_end() -> None:
    """Two people in the zone count 2; the one who vanishes leaves it when its track ends."""
    stays = walk(450, 450, 0, last=60)
    passes = walk(300, 300, 5)  # inside for frames 20..60
    events = run(tracker([DOOR], max_lost_s=1.0), [stays, passes], 100)
    zone = [(e.track_id, e.action, e.count) for e in events if isinstance(e, ZoneEvent)]
    assert zone == [(1, "enter", 1), (2, "enter", 2), (2, "leave", 1), (1, "leave", 0)]
    end = next(e for e in events if isinstance(e, TrackEvent) and e.kind == "end")
    assert end.after["id"] == 1
    assert end.after["zones"] == []
    assert end.after["entered_zones"] == ["door"]
    assert end.before is not None
    assert end.before["zones"] == ["door"]


GATE = LineConfig(name="gate", points=[(480, 520), (480, 100)])  # pointing up: right = +x


def test_line_counts_each_crossing_once() -> None:
    """Left-to-right is in, right-to-left out; each crossing counts once."""
    right = walk(300, 150, 8)
    left = walk(700, 250, -8)
    events = run(tracker(lines=[GATE]), [right, left], 60)
    lines = [
        (e.track_id, e.direction, e.in_count, e.out_count, e.seq)
        for e in events
        if isinstance(e, LineEvent)
    ]
    # Beyond the 8 px margin at x=492 (frame 24) and x=468 (frame 29), two frames to count.
    assert lines == [(1, "in", 1, 0, 25), (2, "out", 1, 1, 30)]


def test_jitter_on_the_line_counts_nothing_and_no_recount() -> None:
    """Wobbling inside the margin counts nothing; wobbling across it after a crossing (one
    frame per side) does not count again; walking on does not either."""

    def crosser(f: int) -> tuple[float, float]:
        if f < 20:
            return (400 + 5 * f, 350)  # reaches 495 at frame 19: crossed
        if f < 50:
            return (480 + (12 if f % 2 else -12), 350)  # beyond the 8 px margin, each side
        return (492 + 4 * (f - 50), 350)

    on_line = jitter(480, 450, 5)  # within the margin
    events = run(tracker(lines=[GATE]), [crosser, on_line], 80)
    lines = [
        (e.track_id, e.direction, e.in_count, e.out_count)
        for e in events
        if isinstance(e, LineEvent)
    ]
    assert lines == [(1, "in", 1, 0)]


def test_walking_around_the_end_of_a_line_counts_nothing() -> None:
    """A path that passes beyond the segment's end is not a crossing."""
    short = LineConfig(name="short", points=[(480, 400), (480, 200)])
    below = walk(300, 480, 8)  # feet at y=480, below the segment's end at 400
    events = run(tracker(lines=[short]), [below], 60)
    assert [e for e in events if isinstance(e, LineEvent)] == []


def test_lifecycle_new_update_end() -> None:
    """new on confirmation (3rd frame), update when a zone is entered and left, end after
    max_lost_s; before is what was last published."""
    walker = walk(100, 300, 10, last=70)
    events = run(tracker([DOOR], max_lost_s=1.0), [walker], 100)
    life = [(e.kind, e.changes, e.seq) for e in events if isinstance(e, TrackEvent)]
    # Lost after frame 70; removed once unseen for more than 1 s (15 frames) -> frame 86.
    assert life == [
        ("new", (), 2),
        ("update", ("zones",), 32),
        ("update", ("zones",), 52),
        ("end", (), 86),
    ]
    new, enter, leave, end = (e for e in events if isinstance(e, TrackEvent))
    assert new.before is None
    assert new.after["first_seen"] == 1000.0
    assert enter.before == new.after
    assert enter.after["zones"] == ["door"]
    assert leave.after["zones"] == []
    assert leave.after["entered_zones"] == ["door"]
    assert end.after["last_seen"] == round(1000.0 + 70 / FPS, 6)
    assert end.after["dwell_s"] == round(70 / FPS, 3)


def test_normalized_zone_matches_its_pixel_twin() -> None:
    """A normalized zone is the same zone as its pixel coordinates."""
    norm = ZoneConfig(
        name="door",
        normalized=True,
        points=[(400 / W, 200 / H), (600 / W, 200 / H), (600 / W, 500 / H), (400 / W, 500 / H)],
    )
    walker = walk(100, 300, 10)
    pix = [
        (e.action, e.seq) for e in run(tracker([DOOR]), [walker], 90) if isinstance(e, ZoneEvent)
    ]
    nrm = [
        (e.action, e.seq) for e in run(tracker([norm]), [walker], 90) if isinstance(e, ZoneEvent)
    ]
    assert pix == nrm == [("enter", 32), ("leave", 52)]


def test_stage_sets_track_ids_and_appends_events() -> None:
    """The stage built from a config tracks only the tracked model of its camera."""
    from edgeyolo.config import Config
    from edgeyolo.frames import Frame
    from edgeyolo.stages import FrameResult, ModelOutput, build_stages

    cfg = Config.model_validate(
        {
            "cameras": [
                {
                    "name": "cam",
                    "source": 0,
                    "lines": [{"name": "gate", "points": [[480, 520], [480, 100]]}],
                }
            ],
            "models": [
                {"name": "det", "path": "m.onnx", "task": "detect", "tracking": {"enabled": True}},
                {"name": "other", "path": "m.onnx", "task": "detect"},
            ],
        }
    )
    (stage,) = build_stages(cfg.cameras[0], cfg)
    image = np.zeros((H, W, 3), np.uint8)
    walker = walk(300, 300, 8)
    kinds, ids = [], []
    for f in range(40):
        outs = [
            ModelOutput(m, "detect", ["person"], dets_at([walker], f)) for m in ("det", "other")
        ]
        res = stage(FrameResult("cam", Frame("cam", f, image, 1000.0 + f / FPS, 0), outs))
        assert res.outputs[1].detections.track_ids is None
        ids.append(int(res.outputs[0].detections.track_ids[0]))
        kinds += [
            (e.type, getattr(e, "kind", None) or getattr(e, "direction", None)) for e in res.events
        ]
    assert ids == [-1, -1] + [1] * 38
    assert kinds == [("track", "new"), ("line", "in")]
    stage.close()


def test_pixel_points_beyond_the_frame_are_reported_on_the_first_frame() -> None:
    """Config cannot know the frame size; the first frame checks pixel points against it."""
    import structlog

    far = ZoneConfig(name="far", points=[(0, 0), (1200, 0), (0, 500)])
    with structlog.testing.capture_logs() as logs:
        run(tracker([far]), [walk(100, 300, 10)], 2)
    (err,) = [e for e in logs if e["log_level"] == "error"]
    assert "zone 'far' of camera 'cam' has a point outside the 960x540 frame" in err["event"]
    assert err["point"] == [1200.0, 0.0]


def test_stage_finish_ends_live_tracks_at_the_last_frame() -> None:
    """When the frames end, the stage ends every live track: zone leave, then end, with the
    last frame's timestamp and seq; tracks that ended earlier are not ended twice."""
    from edgeyolo.config import Config
    from edgeyolo.frames import Frame
    from edgeyolo.stages import FrameResult, ModelOutput, build_stages, finish_stages

    door = DOOR.model_dump()
    cfg = Config.model_validate(
        {
            "cameras": [{"name": "cam", "source": 0, "zones": [door]}],
            "models": [
                {"name": "det", "path": "m.onnx", "task": "detect", "tracking": {"enabled": True}}
            ],
        }
    )
    stages = build_stages(cfg.cameras[0], cfg)
    image = np.zeros((H, W, 3), np.uint8)
    inside = walk(450, 300, 1)  # in the door zone from the start
    gone = walk(100, 450, 5, last=5)  # leaves the frame early: its end comes by max_lost_s
    events = []
    for f in range(45):
        outs = [ModelOutput("det", "detect", ["person"], dets_at([inside, gone], f))]
        frame = Frame("cam", 100 + f, image, 1000.0 + f / FPS, 0)
        events += stages[0](FrameResult("cam", frame, outs)).events
    ended = [
        (e.after["id"], e.seq) for e in events if isinstance(e, TrackEvent) and e.kind == "end"
    ]
    assert ended == [(2, 128)]  # the early leaver, 1.5 s (max_lost_s) after frame 105
    last = [
        (e.action, e.track_id, e.count, e.seq, e.timestamp)
        if isinstance(e, ZoneEvent)
        else (e.kind, e.after["id"], e.after["zones"], e.seq, e.timestamp)
        for e in finish_stages(stages)
    ]
    t = 1000.0 + 44 / FPS
    assert last == [("leave", 1, 0, 144, t), ("end", 1, [], 144, t)]
    assert finish_stages(stages) == []
    stages[0].close()
