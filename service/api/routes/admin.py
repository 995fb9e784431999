"""Admin: robustness checks of the served models, run as background jobs.

Mounted only when an admin token is configured; every route requires it, declared once
on the router. Handlers validate, hand over to the job manager and shape the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from service.api.auth import require_admin
from service.api.deps import Settings
from service.api.job_responses import public_job
from service.api.job_upload import read_submission
from service.api.schemas import RobustnessJob, RobustnessJobList, error_responses, inline_schema
from service.errors import JobsUnavailable, NoReport
from service.jobs.manager import JobManager
from service.jobs.planning import CheckRequest, parse_request
from service.jobs.store import STATUSES, JobRecord

log = logging.getLogger(__name__)


async def get_jobs(request: Request) -> JobManager:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        # Why the jobs could not start (an unreadable database, say), when that is known.
        problem = getattr(request.app.state, "jobs_problem", None)
        raise JobsUnavailable(problem or "the job manager has not started", message=problem)
    return jobs


Jobs = Annotated[JobManager, Depends(get_jobs)]
JobId = Annotated[str, Path(min_length=1, max_length=64)]

router = APIRouter(
    prefix="/robustness-check",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 403, 503),
)

_BODY_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": inline_schema(CheckRequest)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "request": {"type": "string", "description": "the JSON request"},
                        "samples": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npz with uint8 'images' and integer 'labels'",
                        },
                    },
                    "required": ["samples"],
                }
            },
        }
    }
}


@router.post(
    "",
    status_code=202,
    summary="Queue a robustness check (JSON, or a form with an uploaded sample set)",
    openapi_extra=_BODY_DOC,
    responses={
        202: {"model": RobustnessJob, "headers": {"Location": {"description": "the job"}}},
        **error_responses(400, 404, 408, 413, 415, 422, 429),
    },
)
async def submit(request: Request, jobs: Jobs, settings: Settings) -> JSONResponse:
    raw, samples = await read_submission(
        request, settings.robustness_max_upload_bytes, settings.body_read_timeout_seconds
    )
    body = parse_request(raw)
    job = await asyncio.to_thread(jobs.submit, body, samples)
    jobs.wake()
    location = f"{router.prefix}/{job.id}"
    return JSONResponse(
        {**public_job(job, with_report=False), "location": location},
        status_code=202,
        headers={"Location": location},
    )


@router.get(
    "",
    summary="Robustness-check jobs, newest first (without reports)",
    response_model=RobustnessJobList,
    response_model_exclude_unset=True,
    responses=error_responses(422),
)
async def list_jobs(
    jobs: Jobs,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> dict:
    found = await asyncio.to_thread(jobs.recent, limit, status, model)
    shown = []
    for job in found:
        try:
            shown.append(public_job(job, with_report=False))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("job %s: its stored record is malformed (%r); left out", job.id, exc)
    return {"jobs": shown}


@router.get(
    "/{job_id}",
    summary="A job's status, progress and, once it has one, its report",
    response_model=RobustnessJob,
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
async def get_job(job_id: JobId, jobs: Jobs) -> dict:
    return public_job(await asyncio.to_thread(jobs.get, job_id), with_report=True)


@router.delete(
    "/{job_id}",
    summary="Cancel a job; a running one keeps its partial results",
    response_model=RobustnessJob,
    responses={
        202: {"model": RobustnessJob, "description": "a running job is winding down"},
        **error_responses(404, 409, 422),
    },
)
async def cancel_job(job_id: JobId, jobs: Jobs) -> JSONResponse:
    job = await asyncio.to_thread(jobs.cancel, job_id)
    # 202 while a running job is still winding down; 200 once it is cancelled.
    return JSONResponse(
        public_job(job, with_report=False), status_code=202 if job.status == "running" else 200
    )


# A downloaded report page is HTML from this origin: like the page's own <meta> policy, it may
# run nothing and load nothing but its inline styles and data: images.
REPORT_PAGE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"


@router.get(
    "/{job_id}/report.json",
    summary="A job's report as a JSON file to save",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the report"},
        **error_responses(404, 409, 422),
    },
)
async def report_json(job_id: JobId, jobs: Jobs) -> Response:
    job = await asyncio.to_thread(jobs.get, job_id)
    body = json.dumps(_report_of(job), indent=2) + "\n"
    return Response(body, media_type="application/json", headers=_attachment(job, "json"))


@router.get(
    "/{job_id}/report.html",
    summary="A job's report as one self-contained HTML page to save",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}}, "description": "the page"},
        **error_responses(404, 409, 422),
    },
)
async def report_html(job_id: JobId, jobs: Jobs) -> Response:
    # Deferred: the renderer is needed only here, and the serving process otherwise never
    # loads it (tests/service/test_operations.py).
    from robustness.html import to_html

    job = await asyncio.to_thread(jobs.get, job_id)
    page = await asyncio.to_thread(to_html, _report_of(job))
    headers = {
        **_attachment(job, "html"),
        "Content-Security-Policy": REPORT_PAGE_POLICY,
        "X-Content-Type-Options": "nosniff",
    }
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


def _report_of(job: JobRecord) -> dict:
    report = job.report
    if report is None:
        raise NoReport(f"job {job.id} ({job.status}) has no report")
    return report


def _attachment(job: JobRecord, extension: str) -> dict[str, str]:
    """Save, don't show; named after the model, the day and the job."""
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", job.model)[:80]
    day = time.strftime("%Y%m%d", time.gmtime(job.created_at))
    name = f"{model}-{day}-{job.id[:8]}.{extension}"
    return {"Content-Disposition": f'attachment; filename="{name}"'}
