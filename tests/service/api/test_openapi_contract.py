"""The OpenAPI document against the real app: schemathesis generates requests for every
operation (a bounded number each) and checks each answer against the document."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.schemas import ClassifyResponse, InferResponse, ModelList
from service.app import create_app
from tests.service.helpers.images import digit, encode

TOKEN = "contract-test-admin-token-0123456789"
EXAMPLES_PER_OPERATION = 8
ERROR_STATUSES = {400, 401, 403, 404, 409, 413, 415, 422, 429, 503, 504}


def contract_overrides(tmp: Path) -> dict:
    empty = tmp / "no-eval-sets"
    empty.mkdir(exist_ok=True)
    return {
        "admin_token": TOKEN,
        "robustness_db": tmp / "jobs.sqlite3",
        # No bundled evaluation set: a generated request can never start a real attack job.
        "eval_dir": empty,
    }


CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_every_operation_answers_as_documented(make_settings, tmp_path) -> None:
    # schemathesis serves the app over ASGI itself, running its lifespan (models load) on
    # the first request, and generates every operation's requests from the app's document.
    app = create_app(make_settings(**contract_overrides(tmp_path)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    seen: list[tuple[str, int]] = []
    try:
        for operation in operations:
            robust = operation.path.startswith("/robust")
            auth = {"Authorization": f"Bearer {TOKEN}"} if robust else {}
            check_operation(operation, auth, seen)
    finally:
        asgi.shutdown_lifespans()
    # Every operation was called, and both successes and refusals were checked.
    assert {path for path, _ in seen} == {operation.path for operation in operations}
    statuses = {status for _, status in seen}
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses


def check_operation(operation, auth: dict[str, str], seen: list[tuple[str, int]]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case) -> None:
        response = case.call(headers=auth)
        seen.append((operation.path, response.status_code))
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{where}: {response.text[:300]}"
        case.validate_response(response, checks=CHECKS)

    answers_as_documented()


def test_the_document_lists_errors_security_and_the_infer_body(make_settings, tmp_path) -> None:
    document = create_app(make_settings(**contract_overrides(tmp_path))).openapi()
    paths = document["paths"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    documented = set()
    for operations in paths.values():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                schema_of = answer.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith(("4", "5")) and schema_of == error_ref:
                    documented.add(int(status))
    assert documented >= ERROR_STATUSES
    assert document["components"]["securitySchemes"]["adminBearer"]["scheme"] == "bearer"
    for method, operation in paths["/robustness-check/{job_id}"].items():
        assert operation["security"] == [{"adminBearer": []}], method
    assert "security" not in paths["/classify"]["post"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["inputs"]
    assert (
        "binary_data_size"
        in body["properties"]["inputs"]["items"]["properties"]["parameters"]["description"]
    )
    classify = paths["/classify"]["post"]["responses"]["200"]["content"]["application/json"]
    assert classify["schema"] == {"$ref": "#/components/schemas/ClassifyResponse"}
    jobs = paths["/robustness-check/{job_id}"]["get"]["responses"]["200"]["content"]
    assert jobs["application/json"]["schema"] == {"$ref": "#/components/schemas/RobustnessJob"}


def test_a_405_lists_every_method_of_the_path(serve) -> None:
    client = serve(admin_token=TOKEN)
    answer = client.put("/robustness-check/abc", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "DELETE, GET"
    assert answer.json()["reason"] == "method_not_allowed"
    assert client.delete("/classify").headers["Allow"] == "POST"


def documented_exactly(model, answer: dict) -> None:
    """``answer`` validates against ``model`` and carries no key the model leaves out."""
    model.model_validate(answer)
    assert set(answer) <= set(model.model_fields), set(answer) - set(model.model_fields)


def test_the_hot_path_answers_are_what_their_models_document(serve) -> None:
    client = serve()
    png = encode(digit(), "PNG")
    for query in ("", "?include_quantized=true"):
        documented_exactly(ClassifyResponse, client.post(f"/classify{query}", content=png).json())
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}]}
    body["inputs"][0]["data"] = [0.5] * 784
    documented_exactly(InferResponse, client.post("/v2/models/mnist-tq2/infer", json=body).json())
    documented_exactly(ModelList, client.get("/models").json())
