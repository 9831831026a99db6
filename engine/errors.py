"""Errors with one-line messages meant for users."""

from __future__ import annotations


class LampchatError(Exception):
    """Base class: `str(err)` is a complete one-line message for the user."""


class ModelLoadError(LampchatError):
    """A model could not be found, read or loaded."""


class UnknownFormatError(ModelLoadError):
    """A file's content matches no model format Lampchat knows."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint asks to run code or import something not on the allowlist."""


class BackendError(LampchatError):
    """A backend failed (unknown name, missing package, failure mid-stream)."""


class BackendUnavailableError(BackendError):
    """The backend's package or hardware is not present in this install."""


class DeviceUnavailableError(BackendError):
    """The requested device is not present."""


class ConfigError(LampchatError):
    """A config value is invalid."""
