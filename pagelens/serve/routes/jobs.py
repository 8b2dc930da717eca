"""``/index`` and ``/jobs``: indexing jobs of files or folders on the server's disk."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from pagelens.pipeline.text import TextSettings
from pagelens.serve.errors import ApiError
from pagelens.serve.models import IndexBody
from pagelens.serve.state import ServedDep, authorised
from pagelens.wire import tagged

router = APIRouter(dependencies=[Depends(authorised)], tags=["jobs"])


@router.post("/index", status_code=202)
def start_job(served: ServedDep, body: IndexBody) -> dict[str, Any]:
    """Start indexing files or folders (one job at a time)."""
    served.limits.check_paths(body.paths)
    return tagged(served.jobs.start(body.paths, text=TextSettings(ocr=body.ocr)).to_dict())


@router.get("/jobs")
def list_jobs(served: ServedDep) -> dict[str, Any]:
    """Every job kept, the newest first."""
    return tagged({"jobs": [j.to_dict() for j in reversed(served.jobs.all())]})


@router.get("/jobs/{job_id}")
def get_job(served: ServedDep, job_id: str) -> dict[str, Any]:
    """One job and its progress."""
    job = served.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (GET /jobs lists them)")
    return tagged(job.to_dict())


@router.delete("/jobs/{job_id}", status_code=202)
def cancel_job(served: ServedDep, job_id: str) -> dict[str, Any]:
    """Cancel a job at its next batch of pages."""
    job = served.jobs.cancel(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (GET /jobs lists them)")
    return tagged(job.to_dict())
