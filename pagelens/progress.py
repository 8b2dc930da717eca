"""The one rule for progress bars: shown only where someone is watching.

A bar is drawn when the caller asks for one, logging lets INFO through (the CLI's
``--quiet`` raises the level; a library user who configured nothing gets the root
logger's WARNING, so no bar), and stderr is a terminal (tqdm's ``disable=None``).
Every long loop in pagelens makes its bar here, so the rule cannot drift apart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

_LOGGER = logging.getLogger("pagelens")


def shown(*, enabled: bool = True, logger: logging.Logger = _LOGGER) -> bool:
    """Say whether a bar may be drawn: ``enabled`` and ``logger`` lets INFO through.

    Whether stderr is a terminal is left to tqdm, when the bar is made.
    """
    return enabled and logger.isEnabledFor(logging.INFO)


def bar(
    total: int | None,
    desc: str,
    unit: str,
    *,
    enabled: bool = True,
    logger: logging.Logger = _LOGGER,
    leave: bool = True,
) -> tqdm:
    """Make a tqdm bar that is silent unless :func:`shown` and stderr is a terminal.

    Args:
        total: the count the bar goes up to (``None``: unknown).
        desc: its label.
        unit: what it counts, e.g. ``"page"``.
        enabled: ``False`` when the caller wants no bar (a short loop, ``--quiet``).
        logger: the caller's logger; a level above INFO silences the bar.
        leave: keep the finished bar on screen.

    Examples:
        >>> with bar(3, "pages", "page", enabled=False) as b:
        ...     b.update(3)
        >>> b.disable
        True

    """
    from tqdm.auto import tqdm

    disable = None if shown(enabled=enabled, logger=logger) else True  # None: off a terminal
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=leave)
