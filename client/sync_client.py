"""``Client``: the service's routes as blocking calls over one ``httpx.Client``."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import httpx

import client.calls as calls
from client.calls import DEFAULT_URL, Call, CheckFollower, ProgressCallback
from client.errors import CheckTimeout
from client.results import Classification, ModelList, RobustnessJob

T = TypeVar("T")


class Client:
    """A QuSec service at ``base_url``.

    ``admin_token`` is needed only for the robustness checks. ``timeout`` is httpx's: seconds
    (or an ``httpx.Timeout``) for each request; other keyword arguments go to
    ``httpx.Client`` (``verify``, ``proxy``, ``transport``, ...). Use it as a context
    manager, or call ``close()``. Refusals raise ``QuSecError`` with the service's reason.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        **httpx_options: Any,
    ) -> None:
        self.admin_token = admin_token
        self.http = httpx.Client(base_url=base_url, timeout=timeout, **httpx_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: Call[T]) -> T:
        return call.result(self.http.request(**call.request(self.admin_token)))

    def classify(
        self,
        image: Any,
        *,
        model: str | None = None,
        include_quantized: bool = False,
        include_input: bool = False,
    ) -> Classification:
        """Classify ``image``: a file path, bytes, a binary file, a PIL image or a numpy array
        (arrays and PIL images are sent as PNG). ``model``: a loaded model's name (default:
        the service's default); ``include_quantized``/``include_input``: also return the
        image the quantizer made / the model's input before quantization."""
        return self._send(calls.classify(image, model, include_quantized, include_input))

    def models(self) -> ModelList:
        """The loaded models: datasets, input shapes, class names, defences, weights."""
        return self._send(calls.models())

    def ready(self) -> bool:
        """Whether the models are loaded and warmed up."""
        return self._send(calls.ready())

    def submit_check(
        self, model: str | None = None, *, upload: Any = None, **request: Any
    ) -> RobustnessJob:
        """Queue a robustness check of ``model`` (admin). ``request`` holds the fields of the
        service's check request (``attacks``, ``samples``, ``epsilons``, ``batch_size``, ...;
        see ``POST /robustness-check`` in ``/openapi.json``); ``upload``: a labelled ``.npz``
        (path, bytes or binary file) to attack instead of the bundled set."""
        return self._send(calls.submit_check(model, upload, request))

    def get_check(self, job_id: str) -> RobustnessJob:
        """One check, with its report once it has one (admin)."""
        return self._send(calls.get_check(job_id))

    def list_checks(self, limit: int = 50, status: str | None = None) -> list[RobustnessJob]:
        """Checks, newest first, without reports (admin)."""
        return self._send(calls.list_checks(limit, status))

    def cancel_check(self, job_id: str) -> RobustnessJob:
        """Cancel a check; a running one keeps its partial results (admin)."""
        return self._send(calls.cancel_check(job_id))

    def wait_for_check(
        self,
        job_id: str,
        on_progress: ProgressCallback | None = None,
        *,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
    ) -> RobustnessJob:
        """Poll a check until it is final (done, failed, cancelled, ...) and return it with its
        report. ``on_progress(job)`` is called whenever its status or progress changed;
        ``CheckTimeout`` if it is still queued or running after ``timeout`` seconds."""
        follower = CheckFollower(on_progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_check(job_id)
            finished = follower.see(job)
            if follower.pending is not None:
                raise TypeError("on_progress returned an awaitable: use AsyncClient")
            if finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise CheckTimeout(job_id, job.status)
            time.sleep(poll_seconds)

    def run_check(
        self,
        model: str | None = None,
        *,
        upload: Any = None,
        on_progress: ProgressCallback | None = None,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
        **request: Any,
    ) -> RobustnessJob:
        """``submit_check`` then ``wait_for_check``: the finished check with its report."""
        job = self.submit_check(model, upload=upload, **request)
        return self.wait_for_check(job.id, on_progress, poll_seconds=poll_seconds, timeout=timeout)
