"""Load on ``pagelens serve``: concurrent searches while an indexing job writes the index.

A copy of a partly built index is served by ``pagelens serve`` in its own process on
loopback. An indexing job (``POST /index``) adds the remaining PDFs while ``--clients``
threads each send ``--searches`` searches (``GET /search``, questions drawn in turn
from the dataset's queries). Reported: latency percentiles (all searches, and those
sent while the job ran), errors (any status but 200, or a failed connection), the
job's pages/s, and at the end the documents committed and the documents searchable
(a search restricted to each document returns a page of it).

Example (a MiniLM index of half of mmlongbench-dev, the other half indexed under load)::

    pagelens index part-a/ --index idx-a --model minilm
    python -m benchmarks.serve_load --index idx-a --rest part-b/ \\
        --queries ../shared/datasets/mmlongbench-dev/queries.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, default_out, table, write_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "count": len(ms),
        "p50_ms": round(_percentile(ms, 50), 1),
        "p90_ms": round(_percentile(ms, 90), 1),
        "p99_ms": round(_percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, type=Path, help="partly built index folder")
    parser.add_argument(
        "--rest", required=True, nargs="+", type=Path, help="PDFs to index under load"
    )
    parser.add_argument("--queries", required=True, type=Path, help="queries.jsonl")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--searches", type=int, default=500, help="per client")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ocr", default="auto", choices=["auto", "never", "always"])
    parser.add_argument("--job-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=default_out("serve_load"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import httpx

    questions = [json.loads(line)["query"] for line in args.queries.read_text().splitlines()]
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    index = work / "index"
    shutil.copytree(args.index, index)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "pagelens.cli", "serve", "--index", str(index)]
        + ["--port", str(port), "--cache-dir", str(work / "cache"), "-q"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        results = _run(args, base, questions, httpx)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    results["server_log_tail"] = (work / "server.log").read_text()[-2000:]
    shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, "serve_load", command_line(__spec__.name, argv), results)
    return 0


def _wait_for(client: Any, httpx: Any, seconds: float = 300) -> None:
    """Wait until the server answers ``/healthz``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not start in {seconds:g} s")
        time.sleep(0.2)


class JobPoller:
    """Read an indexing job's state each second, in a thread, until it ends."""

    def __init__(self, base: str, job_id: str, httpx: Any) -> None:
        self.base, self.job_id, self.httpx = base, job_id, httpx
        self.running = True
        self.last: dict[str, Any] | None = None
        self.polls: list[tuple[float, int, int, int]] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        # a failed poll is counted, not fatal: the job's state is read again a second later
        with self.httpx.Client(base_url=self.base, timeout=120.0) as c:
            while True:
                try:
                    state = c.get(f"/jobs/{self.job_id}").json()
                except self.httpx.TransportError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(1.0)
                    continue
                self.last = state
                self.polls.append(
                    (time.time(), state["files_done"], state["pages"], len(state["indexed"]))
                )
                if state["state"] not in ("queued", "running"):
                    self.running = False
                    return
                time.sleep(1.0)


def _load(
    args: argparse.Namespace, base: str, questions: list[str], httpx: Any
) -> tuple[list[tuple[float, float, int]], list[str], float]:
    """Each client's searches, all at once: (start time, ms, status) each, failures, seconds."""
    records: list[tuple[float, float, int]] = []  # (start time, ms, status)
    failures: list[str] = []
    lock = threading.Lock()

    def searcher(n: int) -> None:
        with httpx.Client(base_url=base, timeout=120.0) as c:
            for i in range(args.searches):
                q = questions[(n * args.searches + i) % len(questions)]
                start = time.time()
                t = time.perf_counter()
                try:
                    status = c.get("/search", params={"q": q, "k": args.k}).status_code
                except httpx.TransportError as exc:
                    status = -1
                    failures.append(f"{type(exc).__name__}: {exc}")
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    records.append((start, ms, status))

    started = time.perf_counter()
    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, failures, time.perf_counter() - started


def _searchable(client: Any, documents: list[dict[str, Any]]) -> tuple[int, list]:
    """Documents a search restricted to each returns a page of; the others, with statuses."""
    searchable = 0
    not_searchable = []
    for d in documents:
        r = client.post(
            "/search",
            json={"queries": ["report"], "k": 1, "filter": {"doc_paths": [d["doc_path"]]}},
        )
        hits = r.json()["results"][0]["hits"] if r.status_code == 200 else []
        if hits and hits[0]["doc_path"] == d["doc_path"]:
            searchable += 1
        else:
            not_searchable.append((d["doc_path"], r.status_code))
    return searchable, not_searchable


def _run(args: argparse.Namespace, base: str, questions: list[str], httpx: Any) -> dict[str, Any]:
    client = httpx.Client(base_url=base, timeout=120.0)
    _wait_for(client, httpx)
    before = client.get("/info").json()
    t0 = time.perf_counter()
    client.get("/search", params={"q": questions[0], "k": args.k}).raise_for_status()  # warm
    warm_ms = (time.perf_counter() - t0) * 1000
    job = client.post("/index", json={"paths": [str(p) for p in args.rest], "ocr": args.ocr})
    job.raise_for_status()
    job_id = job.json()["id"]
    poller = JobPoller(base, job_id, httpx)
    records, failures, load_s = _load(args, base, questions, httpx)
    load_ended = time.time()
    poller.thread.join(args.job_timeout)
    final_job = client.get(f"/jobs/{job_id}").json()  # read again: the poller may lag
    finished = final_job.get("finished") or float("inf")
    documents = client.get("/documents", params={"limit": 500}).json()["documents"]
    searchable, not_searchable = _searchable(client, documents)
    # PDFs found by the job that were not in the index already (``unchanged`` counts those)
    expected_new = final_job.get("files_total", 0) - final_job.get("unchanged", 0)
    all_ms = [ms for _, ms, _ in records]
    # a search counts as "while the job ran" if it started before the job finished
    during_ms = [ms for start, ms, _ in records if start < finished]
    after_ms = [ms for start, ms, _ in records if start >= finished]
    errors = [s for _, _, s in records if s != 200]
    job_keys = (
        *("state", "files_total", "files_done", "pages", "pages_per_second", "seconds"),
        *("skipped", "page_errors", "error"),
    )
    results = {
        "clients": args.clients,
        "searches_per_client": args.searches,
        "k": args.k,
        "ocr": args.ocr,
        "warm_search_ms": round(warm_ms, 1),
        "searches": _stats(all_ms),
        "searches_while_job_ran": _stats(during_ms),
        "searches_after_job": _stats(after_ms),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
        "connection_failures": failures[:20],
        "load_seconds": round(load_s, 1),
        "searches_per_second": round(len(records) / load_s, 2),
        "job_still_running_when_load_ended": finished > load_ended,
        "job": {k: final_job.get(k) for k in job_keys},
        "documents_before": before["documents"],
        "documents_committed": len(documents),
        "documents_expected": before["documents"] + expected_new,
        "documents_searchable": searchable,
        "not_searchable": not_searchable,
        "job_poll_errors": poller.errors,
        "job_progress": poller.polls,
    }
    _print(results)
    return results


def _print(s: dict[str, Any]) -> None:
    print(
        table(
            ["searches", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [name, st["count"], st["p50_ms"], st["p90_ms"], st["p99_ms"], st["max_ms"]]
                for name, st in (
                    ("all", s["searches"]),
                    ("while the job ran", s["searches_while_job_ran"]),
                    ("after the job", s["searches_after_job"]),
                )
            ],
        )
    )
    print(
        f"errors {s['errors']} · {s['searches_per_second']} searches/s "
        f"over {s['load_seconds']} s · "
        f"job {s['job']['state']}: {s['job']['files_done']}/{s['job']['files_total']} files, "
        f"{s['job']['pages']} pages at {s['job']['pages_per_second']} pages/s · documents "
        f"{s['documents_before']} before, {s['documents_committed']} committed of "
        f"{s['documents_expected']} expected, {s['documents_searchable']} searchable"
    )


if __name__ == "__main__":
    raise SystemExit(main())
