"""Stages: per-camera steps applied to each frame's decoded results, before the sinks.

After every model of a frame has been decoded, the camera's pipeline hands one
``FrameResult`` to each of its stages in order, like structlog's processors: a stage gets the
result, may replace a model's ``Detections`` (a tracker sets track ids), may append events
of its own (object lifecycle, zone changes) and returns the result for the next stage. The
detection events are built from the outputs after the last stage. Stages are stateful per
camera (a tracker remembers its tracks) and run on the event loop: they must be quick. A stage
may also have ``finish`` (``FinishingStage``): when the frames end cleanly, its events (a
tracker's ``end`` for every live track) go to the sinks after the last frame's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.config import CameraConfig, Config
    from edgeyolo.engines.base import Task
    from edgeyolo.frames import Frame
    from edgeyolo.postprocess import Detections


@dataclass(slots=True)
class ModelOutput:
    """One model's result for one frame: canonical arrays in source-image pixels."""

    model: str
    task: Task
    labels: Sequence[str]
    detections: Detections
    infer_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass(slots=True)
class FrameResult:
    """What stages see for one frame of one camera, in order, after decode.

    ``frame.image`` is the captured image that the engines read: a stage that draws copies it.
    ``outputs`` holds the models that succeeded on this frame, in config order. ``events``
    are extra events stages add; sinks get them after the frame's detection events.
    """

    camera: str
    frame: Frame
    outputs: list[ModelOutput]
    events: list[Any] = field(default_factory=list)

    def output(self, model: str) -> ModelOutput | None:
        """The output of ``model`` on this frame, or None when it failed or does not run here."""
        return next((o for o in self.outputs if o.model == model), None)


@runtime_checkable
class Stage(Protocol):
    """One step between decode and the sinks (see the module docstring)."""

    def __call__(self, result: FrameResult) -> FrameResult: ...

    def close(self) -> None:
        """Release what the stage holds; called once after the camera's last frame."""
        ...


@runtime_checkable
class FinishingStage(Protocol):
    """A stage with something to say when the camera's frames end (``finish_stages``)."""

    def finish(self) -> list[Any]:
        """Events for the end of the frames (a tracker: an ``end`` for every live track)."""
        ...


def build_stages(camera: CameraConfig, config: Config) -> list[Stage]:
    """The stages ``camera`` runs, in order, from the config."""
    stages: list[Stage] = []
    if any(m.tracking.enabled for m in config.models_for(camera.name)):
        # Imported only when used: tracking brings scipy.
        from edgeyolo.tracking.stage import TrackingStage  # noqa: PLC0415

        stages.append(TrackingStage.for_camera(camera, config))
    return stages


def run_stages(stages: Sequence[Stage], result: FrameResult) -> FrameResult:
    """Apply ``stages`` in order."""
    for stage in stages:
        result = stage(result)
    return result


def finish_stages(stages: Sequence[Stage]) -> list[Any]:
    """The events of the stages that have some for the end of the camera's frames, in order.

    Called once when the frames ended cleanly (the source ended, ``max_frames``, a stop or a
    reload; not when a frame failed or the stop timed out), after the last frame's events
    and while the sinks are still open.
    """
    events: list[Any] = []
    for stage in stages:
        if isinstance(stage, FinishingStage):
            events.extend(stage.finish())
    return events
