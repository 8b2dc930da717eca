"""The one root error of pagelens and its families."""

from __future__ import annotations


class PagelensError(Exception):
    """Root of every error pagelens raises on purpose."""


class InputError(PagelensError):
    """A bad input file: names the file and the cause."""

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str]]:
        # picklable as it was made (a distributed run raises it in one process, reads it in another)
        return (type(self), (self.path, self.cause))


class EncoderError(PagelensError):
    """A model could not be loaded or run."""


class MissingExtraError(PagelensError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is not installed; install it with: pip install 'pagelens[{extra}]'"
        )


class IndexMismatchError(PagelensError):
    """An index was built with other settings than those asked for."""


class StoreError(PagelensError):
    """The store could not be opened, read or written."""


class IndexClosedError(StoreError):
    """The index (or the Lens over it) was closed; open it again to use it."""


def check_whole(name: str, value: object, low: int) -> int:
    """Return ``value`` if it is a whole number (not a bool) of at least ``low``.

    Raises:
        PagelensError: naming ``name`` and the bad value.

    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PagelensError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


class DocumentNotFoundError(PagelensError):
    """The index holds no document by that name (recorded path or sha256)."""


class PageNotFoundError(PagelensError):
    """A page number that is not a page of the document (not a whole number in 1..pages)."""


class SourceGoneError(InputError):
    """The file a document was indexed from is no longer there (moved or deleted)."""


class SourceChangedError(InputError):
    """The file a document was indexed from now holds other bytes (sha256 differs)."""
