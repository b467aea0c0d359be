"""The tracking stage: per camera, one ``ObjectTracker`` per tracked model.

It sets ``Detections.track_ids`` on the outputs of tracked models and appends the frame's
lifecycle, zone and line events to ``FrameResult.events``. Trackers are made on a model's
first output (its labels and task come with it). A model that failed on a frame is simply not
stepped: its tracks are predicted on from the next frame it delivers. When the camera's
frames end cleanly (the source ended, a stop, a reload), ``finish`` ends every live track:
its zone ``leave`` events and its ``end``, stamped with the last frame the tracker saw.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edgeyolo.tracking.objects import ObjectTracker

if TYPE_CHECKING:
    from edgeyolo.config import CameraConfig, Config, TrackingConfig
    from edgeyolo.events import Event
    from edgeyolo.stages import FrameResult, ModelOutput


class TrackingStage:
    """Tracks the objects of every tracked model of one camera."""

    def __init__(self, camera: CameraConfig, tracked: dict[str, TrackingConfig]) -> None:
        self.camera = camera
        self.tracked = tracked
        self.trackers: dict[str, ObjectTracker] = {}
        self._last: dict[str, tuple[float, int]] = {}  # model -> last frame (timestamp, seq)

    @classmethod
    def for_camera(cls, camera: CameraConfig, config: Config) -> TrackingStage:
        """The stage for the tracked models that run on ``camera``."""
        models = config.models_for(camera.name)
        return cls(camera, {m.name: m.tracking for m in models if m.tracking.enabled})

    def _tracker(self, out: ModelOutput) -> ObjectTracker:
        ot = self.trackers.get(out.model)
        if ot is None:
            ot = ObjectTracker(
                self.camera.name,
                out.model,
                out.labels,
                self.tracked[out.model],
                pose=out.task == "pose",
                zones=self.camera.zones,
                lines=self.camera.lines,
            )
            self.trackers[out.model] = ot
        return ot

    def __call__(self, result: FrameResult) -> FrameResult:
        frame = result.frame
        for out in result.outputs:
            if out.model not in self.tracked:
                continue
            ids, events = self._tracker(out).step(
                out.detections, frame.timestamp, frame.seq, frame.width, frame.height
            )
            out.detections = dataclasses.replace(out.detections, track_ids=ids)
            result.events.extend(events)
            self._last[out.model] = (frame.timestamp, frame.seq)
        return result

    def finish(self) -> list[Event]:
        """End every live track of every model (the frames ended): their events."""
        events: list[Event] = []
        for model, ot in self.trackers.items():
            timestamp, seq = self._last[model]
            events.extend(ot.finish(timestamp, seq))
        return events

    def close(self) -> None:
        """Drop the trackers (``finish`` has ended their tracks, if the frames ended cleanly)."""
        self.trackers.clear()
