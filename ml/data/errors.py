"""The data layer's errors, apart from the modules that raise them: the CLI maps them to exit
codes without importing pandas (a second of every command's start)."""

from __future__ import annotations


class DownloadError(RuntimeError):
    """A data set could not be fetched or did not check out."""


class DatasetError(ValueError):
    """The data set cannot be read at all (missing file, wrong header)."""
