"""``/healthz`` (open to all) and ``/info``: is it up, and what does it serve."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends

from pagelens.search import index_channels
from pagelens.serve.state import ServedDep, authorised
from pagelens.version import package_version
from pagelens.wire import tagged

public = APIRouter(tags=["health"])
router = APIRouter(dependencies=[Depends(authorised)], tags=["health"])


@public.get("/healthz", summary="Liveness (no API key needed).")
def healthz() -> dict[str, Any]:
    return tagged({"status": "ok"})


@router.get("/info", summary="The index, its models and channels, limits.")
def info(served: ServedDep) -> dict[str, Any]:
    lens, jobs = served.lens, served.jobs
    out: dict[str, Any] = {
        "pagelens_version": package_version(),
        "location": lens.index.location,
        "model": lens.model,
        "text_model": lens.text_model,
        "channels": [],
        "documents": 0,
        "pages": 0,
        "manifest": None,
    }
    if lens.index.exists():
        out.update(lens.info().to_dict())
    if lens.index.manifest is not None:
        out["channels"] = list(index_channels(lens.index))
    out["jobs_running"] = [j.id for j in jobs.all() if j.state in ("queued", "running")]
    out["image_cache_bytes"] = served.images.cached_bytes()
    out["limits"] = asdict(served.limits)
    return tagged(out)
