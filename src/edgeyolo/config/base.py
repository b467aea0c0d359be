"""The base of every config model: unknown keys are errors, values are immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config section: ``extra="forbid"`` (typos are errors) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
