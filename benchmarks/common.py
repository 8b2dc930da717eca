"""Shared helpers of the benchmark scripts: machine info, a timer, tables and JSON output.

Benchmarks are not tests: each script measures, prints a table of numbers taken side
by side in one run, and writes them with the machine they were measured on as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the checkout: children run from here
RESULTS = ROOT / "benchmarks" / "results"
MMLONGBENCH_PDFS = Path("/work/shared/datasets/mmlongbench-dev/pdfs")


def default_out(name: str) -> Path:
    """``benchmarks/results/<name>.json``."""
    return RESULTS / f"{name}.json"


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _poppler_version() -> str | None:
    import subprocess

    try:
        proc = subprocess.run(["pdftoppm", "-v"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0].strip() if first else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: CPUs, memory, Python, torch and poppler versions."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "colpali_engine": _version("colpali-engine"),
        "poppler": _poppler_version(),
        # other work on the machine skews wall-clock numbers; ratios within one run less so
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["memory_gib"] = None
    return info


class Timer:
    """Wall-clock seconds of a block: ``with Timer() as t: ...; t.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds of a block to ``into[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - start


def repeat(fn: Callable[[], Any], times: int) -> list[float]:
    """Seconds of ``times`` calls of ``fn``."""
    out = []
    for _ in range(times):
        with Timer() as t:
            fn()
        out.append(t.seconds)
    return out


def cpu_repeat(fn: Callable[[], Any], times: int) -> list[float]:
    """CPU seconds of this process for ``times`` calls of ``fn`` (less skewed by other load)."""
    out = []
    for _ in range(times):
        start = time.process_time()
        fn()
        out.append(time.process_time() - start)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (floats to 3 significant decimals)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row, r in zip(rows, cells, strict=True):
        lines.append(
            "  ".join(
                c.ljust(w) if isinstance(v, str) else c.rjust(w)
                for v, c, w in zip(row, r, widths, strict=True)
            )
        )
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], name: str, command: str, results: Any) -> Path:
    """Write ``{benchmark, command, measured_at, machine, results}`` to ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "command": command,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "results": results,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that ran benchmark ``module`` with ``argv``, for the JSON record."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", "-m", module, *args])


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs benchmark ``module`` in a child process (from :data:`ROOT`)."""
    return [sys.executable, "-m", module, *args]
