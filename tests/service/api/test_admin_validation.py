"""POST /robustness-check refusals: every bad request and upload gets its reason, and
nothing is queued."""

from __future__ import annotations

import io
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from models.evalset import EVAL_DIR
from tests.service.helpers.admin import AUTH, FAST, tiny_npz
from tests.service.helpers.checkpoints import write_checkpoint


@pytest.mark.parametrize(
    ("body", "reason", "says"),
    [
        ({"attacks": ["fgsm", "deepfool"]}, "invalid_job_request", "unknown attack 'deepfool'"),
        ({"threat_models": ["oracle"]}, "invalid_job_request", "unknown threat model"),
        ({"epsilons": [-0.1]}, "invalid_job_request", "epsilons must lie in (0, 1]"),
        ({"epsilons": [1.5]}, "invalid_job_request", "epsilons must lie in (0, 1]"),
        ({"epsilons": ["wide"]}, "invalid_job_request", "epsilons: not a radius: 'wide'"),
        ({"epsilons": ["1/0"]}, "invalid_job_request", "not a radius"),
        ({"epsilons": ["300/255"]}, "invalid_job_request", "epsilons must lie in (0, 1]"),
        ({"epsilons": [0.1] * 2}, "invalid_job_request", "repeat"),
        ({"epsilons": [i / 100 for i in range(1, 10)]}, "invalid_job_request", "at most 8"),
        ({"samples": 101}, "invalid_job_request", "at most 100 samples"),
        ({"samples": 0}, "invalid_job_request", "invalid samples"),
        ({"time_budget_seconds": 1e9}, "invalid_job_request", "time_budget_seconds"),
        ({"attacks": ["spsa"], "threat_models": ["naive"]}, "invalid_job_request", "none of"),
        ({"attack_params": {"pgd": {"nb_iter": 5}}}, "invalid_job_request", "not requested"),
        ({"attack_params": {"fgsm": {"nb_iter": 5}}}, "invalid_job_request", "no parameter"),
        ({"shell": "rm -rf /"}, "invalid_job_request", "invalid shell"),
        ({"model": "mnist-cq9"}, "unknown_model", "'mnist-cq9' is loaded; loaded: mnist-tq2"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_invalid_requests_are_refused_with_the_reason(queue_only_admin, body, reason, says) -> None:
    client = queue_only_admin()
    response = client.post("/robustness-check", headers=AUTH, json={**FAST, **body})
    assert response.json()["reason"] == reason
    assert response.status_code == (404 if reason == "unknown_model" else 422)
    assert says in response.json()["error"]
    assert client.get("/robustness-check", headers=AUTH).json() == {"jobs": []}


def test_transfer_without_a_surrogate_is_refused(queue_only_admin, tmp_path) -> None:
    alone = write_checkpoint(tmp_path / "alone" / "mnist-tq2", {"kind": "tq", "levels": 2})
    client = queue_only_admin(checkpoints=[alone])
    response = client.post(
        "/robustness-check", headers=AUTH, json={**FAST, "threat_models": ["transfer"]}
    )
    assert response.status_code == 422
    assert "transfer is unavailable" in response.json()["error"]
    assert "mnist-undefended" in response.json()["error"]
    # Without it, the default threat models simply leave transfer out.
    accepted = client.post("/robustness-check", headers=AUTH, json=FAST)
    assert accepted.status_code == 202
    assert "transfer" not in accepted.json()["request"]["threat_models"]
    client.delete(accepted.headers["Location"], headers=AUTH)


def test_transfer_on_the_surrogate_itself_is_refused(queue_only_admin, checkpoints) -> None:
    client = queue_only_admin(checkpoints=[checkpoints["mnist-undefended"]])
    response = client.post(
        "/robustness-check", headers=AUTH, json={**FAST, "threat_models": ["transfer"]}
    )
    assert response.status_code == 422 and "its own surrogate" in response.json()["error"]


def _bad_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images.npy", b"\x00" * 64)
        archive.writestr("labels.npy", b"\x00" * 64)
        archive.writestr("payload.pkl", pickle.dumps({"a": 1}))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("upload", "says"),
    [
        (b"not a zip at all", "not an .npz"),
        (_bad_zip(), "exactly two arrays"),
        (tiny_npz(labels=np.array([{"x": 1}] * 20, dtype=object)), "pickles are refused"),
        (tiny_npz(5, images=np.zeros((5, 28, 28), np.float32)), "must be uint8"),
        (tiny_npz(5, images=np.zeros((5, 3, 28, 28), np.uint8)), "must have shape"),
        (tiny_npz(labels=np.arange(20) + 5), "class indices"),
        (tiny_npz(labels=np.zeros(19, np.int64)), "one per image"),
        (tiny_npz(count=30), "more than 25 images"),
    ],
    ids=[
        "not-zip",
        "extra-member",
        "pickle",
        "float",
        "shape",
        "label-range",
        "label-count",
        "count",
    ],
)
def test_bad_uploads_are_refused(queue_only_admin, upload, says) -> None:
    client = queue_only_admin(robustness_max_upload_images=25)
    response = client.post(
        "/robustness-check",
        headers=AUTH,
        files={"samples": ("set.npz", upload, "application/octet-stream")},
    )
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "invalid_samples"
    assert says in response.json()["error"]


def test_upload_limits_and_form_shape(queue_only_admin) -> None:
    client = queue_only_admin(robustness_max_upload_bytes=4096)
    big = client.post("/robustness-check", headers=AUTH, files={"samples": ("a", b"\x00" * 5000)})
    assert big.status_code == 413 and big.json()["reason"] == "body_too_large"
    stray = client.post("/robustness-check", headers=AUTH, files={"script": ("a", b"x")})
    assert stray.status_code == 400 and stray.json()["reason"] == "bad_multipart"
    none = client.post("/robustness-check", headers=AUTH, files={"request": (None, "{}")})
    assert none.status_code == 400 and none.json()["reason"] == "missing_file"


def test_bundled_samples_come_from_the_configured_eval_dir(queue_only_admin, tmp_path) -> None:
    # An installed package cannot find data/eval next to its source; QUSEC_EVAL_DIR says where.
    client = queue_only_admin(eval_dir=tmp_path / "empty")
    response = client.post("/robustness-check", headers=AUTH, json=FAST)
    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_samples"
    assert "no bundled evaluation set for mnist" in response.json()["error"]
    client.close()

    moved = tmp_path / "moved"
    moved.mkdir()
    for source in (EVAL_DIR / "mnist-test-first1000.npz", EVAL_DIR / "mnist-test-first1000.json"):
        shutil.copy(source, moved / source.name)
    client = queue_only_admin(eval_dir=moved)
    accepted = client.post("/robustness-check", headers=AUTH, json=FAST)
    assert accepted.status_code == 202, accepted.text
    client.delete(accepted.headers["Location"], headers=AUTH)


def test_radii_written_as_fractions_are_accepted_and_echoed_as_given(
    queue_only_admin, checkpoints
) -> None:
    client = queue_only_admin(checkpoints=[checkpoints["cifar-cq3"]])
    body = {**FAST, "epsilons": ["2/255", " 8/255", 0.05], "l2_epsilons": ["1/2"]}
    body |= {"attacks": ["fgsm", "pgd_l2"], "sanity_epsilon": "255/255"}
    response = client.post("/robustness-check", headers=AUTH, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["request"]["epsilons"] == pytest.approx([2 / 255, 8 / 255, 0.05])
    assert job["request"]["l2_epsilons"] == [0.5] and job["request"]["sanity_epsilon"] == 1.0
    given = {"epsilons": ["2/255", " 8/255", 0.05], "l2_epsilons": ["1/2"]}
    assert job["radii_as_given"] == {**given, "sanity_epsilon": "255/255"}
    shown = client.get(response.headers["Location"], headers=AUTH).json()
    assert shown["radii_as_given"] == job["radii_as_given"]
    # Left to the defaults, radii are not echoed: there is nothing the request wrote.
    default = client.post("/robustness-check", headers=AUTH, json={**FAST, "epsilons": None})
    assert "radii_as_given" not in default.json()
    for location in (response.headers["Location"], default.headers["Location"]):
        client.delete(location, headers=AUTH)
