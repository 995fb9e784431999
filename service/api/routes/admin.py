"""Admin: robustness checks of the served models, run as background jobs.

Mounted only when an admin token is configured; every route requires it, declared once
on the router. Handlers validate, hand over to the job manager and shape the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from service.api.auth import require_admin
from service.api.deps import Settings
from service.api.job_responses import public_job
from service.api.job_upload import read_submission
from service.api.schemas import RobustnessJob, RobustnessJobList, error_responses, inline_schema
from service.errors import JobsUnavailable
from service.jobs.manager import JobManager
from service.jobs.planning import CheckRequest, parse_request
from service.jobs.store import STATUSES

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
) -> dict:
    found = await asyncio.to_thread(jobs.recent, limit, status)
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
