"""Run poppler's command-line tools (``pdfinfo``, ``pdftoppm``, ``pdftotext``, ``pdfimages``).

One place for what every call shares: where the executable is, the timeout, the
error for a missing tool, and how poppler's stderr reads inside an error message.
Rendering (:mod:`pagelens.pipeline.render`) and page text
(:mod:`pagelens.pipeline.text`) both call poppler through here, so a failure
reads the same whichever of them met it.
"""

from __future__ import annotations

import math
import os
import subprocess

from pagelens.errors import PagelensError


class PopplerTimeout(PagelensError):
    """A poppler tool ran past its timeout (and was killed)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(timed_out(timeout_s))


def check_settings(timeout_s: object, poppler_path: str | None) -> None:
    """Check the settings every poppler call shares; name a bad value."""
    t = timeout_s
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0 and math.isfinite(t)):
        raise PagelensError(f"timeout_s must be a positive number of seconds, got {t!r}")
    if poppler_path is not None and not os.path.isdir(poppler_path):
        raise PagelensError(f"poppler_path is not a folder: {poppler_path!r}")


def timed_out(timeout_s: float) -> str:
    """Return the cause given for a poppler call that ran past ``timeout_s`` seconds."""
    return f"poppler timed out after {timeout_s:g} s"


def executable(tool: str, poppler_path: str | None) -> str:
    """Return the command for ``tool``: inside ``poppler_path`` when given, else a name on PATH."""
    return os.path.join(poppler_path, tool) if poppler_path else tool


def not_found(tool: str, poppler_path: str | None) -> PagelensError:
    """Return the error for a poppler tool not installed where it was looked for."""
    where = poppler_path or "PATH"
    return PagelensError(
        f"poppler's {tool!r} was not found in {where}; install poppler-utils "
        "(Debian/Ubuntu) or poppler (conda, Homebrew), or set poppler_path"
    )


def run(
    tool: str, args: list[str], *, timeout_s: float, poppler_path: str | None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``tool`` with ``args`` to completion, stdout and stderr captured.

    A non-zero exit status is returned, not raised: what it means depends on the tool.

    Raises:
        PopplerTimeout: the tool ran past ``timeout_s`` seconds.
        PagelensError: the tool is not installed (:func:`not_found`).

    """
    try:
        return subprocess.run(
            [executable(tool, poppler_path), *args],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise PopplerTimeout(timeout_s) from err
    except FileNotFoundError as err:
        raise not_found(tool, poppler_path) from err


def start(tool: str, args: list[str], *, poppler_path: str | None) -> subprocess.Popen[bytes]:
    """Start ``tool`` with stdout discarded and stderr piped; the caller waits on it.

    Raises:
        PagelensError: the tool is not installed (:func:`not_found`).

    """
    try:
        # stderr to a pipe read by communicate(): poppler may write a lot of it.
        return subprocess.Popen(
            [executable(tool, poppler_path), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as err:
        raise not_found(tool, poppler_path) from err


def message(stderr: str | bytes, limit: int = 300) -> str:
    """Put a tool's stderr on one line, de-duplicated and cut to ``limit`` characters."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = list(dict.fromkeys(line.strip() for line in stderr.splitlines() if line.strip()))
    text = "; ".join(lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure(tool: str, proc: subprocess.CompletedProcess[bytes]) -> str:
    """Return ``<tool> failed (exit status <n>): <stderr>`` for a call that exited non-zero."""
    cause = message(proc.stderr)
    return f"{tool} failed (exit status {proc.returncode})" + (f": {cause}" if cause else "")


def open_failure(tool: str, stderr: str | bytes, password: str | None) -> str:
    """Explain to a user why ``tool`` could not open a document.

    ``password`` is the one that was given (``None``: none was).
    """
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    if "Incorrect password" in stderr:
        if password is None:
            return "encrypted PDF: a password is required (pass --password)"
        return "encrypted PDF: wrong password"
    if "Invalid page count 0" in stderr or "Wrong page range" in stderr:
        return "PDF has no pages"
    return f"corrupt PDF: {message(stderr) or f'{tool} could not read it'}"
