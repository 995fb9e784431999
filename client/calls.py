"""The service's routes as calls, shared by ``Client`` and ``AsyncClient``.

A ``Call`` says what to send and how to read a successful answer; the two clients only
send it (one blocking, one awaiting) and hand the answer to ``Call.result``. The rules
for following a robustness check live here too, in ``CheckFollower``, so that both
clients wait the same way.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from client.errors import error_from
from client.images import file_bytes, image_bytes, media_type
from client.results import Classification, ModelList, RobustnessJob, job_list

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"  # where make serve listens
CHECKS = "/robustness-check"
ProgressCallback = Callable[[RobustnessJob], object]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    admin: bool = False  # sends the admin bearer token
    options: dict[str, Any] = field(default_factory=dict)  # params, content, json, files, ...
    answers: tuple[int, ...] = ()  # statuses besides 2xx whose body is an answer, not an error

    def request(self, admin_token: str | None) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` for this call."""
        headers = dict(self.options.get("headers", {}))
        if self.admin and admin_token is not None:  # without one, the service answers 401
            headers["Authorization"] = f"Bearer {admin_token}"
        return {**self.options, "method": self.method, "url": self.path, "headers": headers}

    def result(self, response: httpx.Response) -> T:
        """The answer as a typed result, or the service's refusal raised as ``QuSecError``."""
        if not response.is_success and response.status_code not in self.answers:
            raise error_from(response)
        return self.read(response.json())


def classify(
    image: Any, model: str | None, include_quantized: bool, include_input: bool
) -> Call[Classification]:
    data = image_bytes(image)
    params: dict[str, str] = {}
    if model is not None:
        params["model"] = model
    if include_quantized:
        params["include_quantized"] = "true"
    if include_input:
        params["include_input"] = "true"
    options = {"params": params, "content": data, "headers": {"Content-Type": media_type(data)}}
    return Call("POST", "/classify", Classification.from_json, options=options)


def models() -> Call[ModelList]:
    return Call("GET", "/models", ModelList.from_json)


def ready() -> Call[bool]:
    # 503 with {"status": "not_ready"} while the models load: an answer, not a failure.
    return Call("GET", "/readyz", lambda body: body.get("status") == "ready", answers=(503,))


def submit_check(model: str | None, upload: Any, request: Mapping[str, Any]) -> Call[RobustnessJob]:
    body = {**request, **({} if model is None else {"model": model})}
    if upload is None:
        options: dict[str, Any] = {"json": body}
    else:
        npz = file_bytes(upload)
        if npz is None:
            raise TypeError("upload must be the .npz file's path, bytes or binary file")
        options = {
            "data": {"request": json.dumps(body)},
            "files": {"samples": ("samples.npz", npz, "application/octet-stream")},
        }
    return Call("POST", CHECKS, RobustnessJob.from_json, admin=True, options=options)


def get_check(job_id: str) -> Call[RobustnessJob]:
    return Call("GET", f"{CHECKS}/{job_id}", RobustnessJob.from_json, admin=True)


def list_checks(limit: int, status: str | None) -> Call[list[RobustnessJob]]:
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    return Call("GET", CHECKS, job_list, admin=True, options={"params": params})


def cancel_check(job_id: str) -> Call[RobustnessJob]:
    return Call("DELETE", f"{CHECKS}/{job_id}", RobustnessJob.from_json, admin=True)


class CheckFollower:
    """Watches a job's successive states: calls ``on_progress`` whenever its status or
    progress changed since the last one seen, and says when the job is final.

    What the callback returns, when it is awaitable, is left in ``pending`` for an
    asyncio caller to await."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.last: tuple[str, Any] | None = None
        self.pending: Awaitable[object] | None = None

    def see(self, job: RobustnessJob) -> bool:
        """Whether ``job`` is final."""
        state = (job.status, job.progress)
        self.pending = None
        if self.on_progress is not None and state != self.last:
            returned = self.on_progress(job)
            if inspect.isawaitable(returned):
                self.pending = returned
        self.last = state
        return job.finished
