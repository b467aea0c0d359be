"""Configuration of snapshots: the best picture of each label per camera, over MQTT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeyolo.config.base import Strict


class SnapshotConfig(Strict):
    """Per camera and label, the best frame of an object as a retained JPEG (docs/mqtt.md)."""

    enabled: bool = Field(False, description="Publish snapshots (and announce image entities).")
    labels: list[str] = Field(
        default_factory=lambda: ["person"],
        min_length=1,
        description="Labels that get a snapshot topic and a Home Assistant image entity.",
    )
    models: list[str] | None = Field(
        None, description="Models whose detections make snapshots. None: every model."
    )
    mode: Literal["frame", "crop"] = Field(
        "frame", description="'frame': the whole frame with the box drawn; 'crop': the object."
    )
    max_width: int = Field(
        640, ge=32, le=4096, description="Snapshots wider than this are scaled down to it."
    )
    quality: int = Field(80, ge=10, le=100, description="JPEG quality.")
    max_bytes: int = Field(
        256_000,
        ge=4096,
        description="Largest JPEG published; bigger ones are re-encoded smaller, else skipped.",
    )
    min_interval_s: float = Field(
        10.0, ge=0, description="At most one snapshot per camera and label this often."
    )
    min_score: float = Field(
        0.5, ge=0, le=1, description="Detections scoring below this never make a snapshot."
    )
