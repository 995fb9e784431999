"""A small Python client of the QuSec service, blocking (``Client``) or asyncio
(``AsyncClient``), over httpx:

    from client import Client

    with Client("http://127.0.0.1:8000") as qusec:
        result = qusec.classify("samples/digit.png")
        print(result.label, result.class_name, result.probabilities[result.class_name])

Answers are typed (``client.results``, one dataclass per response schema of the service's
OpenAPI document); refusals raise ``QuSecError`` with the service's HTTP status and reason
code. It imports nothing of the service's own: httpx and the standard library only (a PIL
image or numpy array is accepted without either being imported here).
"""

from client.async_client import AsyncClient
from client.errors import CheckTimeout, QuSecError
from client.results import (
    Classification,
    Defence,
    EncodedImage,
    JobProgress,
    ModelBrief,
    ModelDescription,
    ModelList,
    RobustnessJob,
)
from client.sync_client import Client

__all__ = [
    "AsyncClient",
    "CheckTimeout",
    "Classification",
    "Client",
    "Defence",
    "EncodedImage",
    "JobProgress",
    "ModelBrief",
    "ModelDescription",
    "ModelList",
    "QuSecError",
    "RobustnessJob",
]
