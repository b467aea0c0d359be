"""Exceptions that reach the user: each message says what, where and what to do."""

from __future__ import annotations


class EdgeYoloError(Exception):
    """Base class of every error edgeyolo raises on purpose."""


class ConfigError(EdgeYoloError):
    """The configuration file is missing, unreadable or invalid."""


class ModelError(EdgeYoloError):
    """A model file is missing, corrupt, or does not match its configuration."""


class SourceError(EdgeYoloError):
    """A frame source cannot be opened or delivered something unusable."""


class BackendUnavailableError(EdgeYoloError):
    """The requested inference backend cannot run on this machine."""
