"""The one progress-bar rule: a bar only for a terminal, INFO logging and a willing caller."""

import io
import logging

import pytest

from pagelens import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _on_a_terminal(monkeypatch):
    # set in the test body: pytest's capture replaces sys.stderr after fixture setup
    monkeypatch.setattr("sys.stderr", _Terminal())


@pytest.fixture
def logger():
    log = logging.getLogger("pagelens.test_progress")
    yield log
    log.setLevel(logging.NOTSET)


def test_a_bar_shows_on_a_terminal_with_info_logging(monkeypatch, logger):
    _on_a_terminal(monkeypatch)
    logger.setLevel(logging.INFO)
    with progress.bar(2, "pages", "page", logger=logger) as bar:
        assert not bar.disable


@pytest.mark.parametrize("level, enabled", [(logging.WARNING, True), (logging.INFO, False)])
def test_quiet_logging_or_an_unwilling_caller_silences_it(monkeypatch, logger, level, enabled):
    _on_a_terminal(monkeypatch)
    logger.setLevel(level)
    with progress.bar(2, "pages", "page", enabled=enabled, logger=logger) as bar:
        assert bar.disable


def test_no_bar_off_a_terminal(monkeypatch, logger):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    logger.setLevel(logging.INFO)
    with progress.bar(2, "pages", "page", logger=logger) as bar:
        assert bar.disable
