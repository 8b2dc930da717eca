"""The installed pagelens version, for manifests, results and ``pagelens --version``."""

from __future__ import annotations


def package_version() -> str:
    """Return the version of the installed distribution (``0+unknown`` from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pagelens")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
