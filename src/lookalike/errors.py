"""The errors lookalike raises: one base class, one subclass per kind of problem.

Every message says what was expected, what arrived and, where there is one, how to fix it.
"""

from __future__ import annotations

from pathlib import Path


class LookalikeError(Exception):
    """Base class of every error lookalike raises on purpose."""


class ImageError(LookalikeError, ValueError):
    """An image could not be used: it names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SettingsError(LookalikeError, ValueError):
    """Settings that do not fit: an unknown key, a value out of range."""


class NotFittedError(LookalikeError, RuntimeError):
    """A component that learns was used before `fit`."""


class IndexMismatchError(LookalikeError, ValueError):
    """Vectors, models or files that do not belong to this index."""


class IndexNotFoundError(LookalikeError, FileNotFoundError):
    """No index at the given path."""


class UnknownNameError(LookalikeError, KeyError):
    """A name that no registry knows; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingDependency(LookalikeError, ImportError):
    """An optional package is needed for this feature but not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        fix = f'pip install "lookalike[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package {package!r}, which is not installed: {fix}")


class ModelNotFoundError(LookalikeError, FileNotFoundError):
    """Model weights that are neither installed nor at the given path."""


class IndexBusyError(LookalikeError, TimeoutError):
    """Another process holds the index's write lock."""


class IndexCorruptError(LookalikeError, RuntimeError):
    """An index file that cannot be read: the message names it and says how to recover."""


class DiskFullError(LookalikeError, OSError):
    """No space left for a write; nothing committed was lost."""
