"""A whole multipart body's file part: read directly when the form is one plain part, by
python-multipart's parser otherwise, with the same answer either way
(``service.edge.multipart.form_file``)."""

from __future__ import annotations

import random

import httpx
import pytest

from service.edge import multipart
from service.edge.multipart import form_file
from service.errors import ServiceError
from tests.service.helpers.servers import PNG

LIMIT = 1 << 20
PART = b'Content-Disposition: form-data; name="file"; filename="d.png"\r\nContent-Type: image/png'


def outcome(content_type: str, body: bytes, direct: bool, limit: int = LIMIT) -> tuple:
    try:
        data, declared = form_file(content_type, body, limit, direct=direct)
    except ServiceError as exc:
        return ("refused", type(exc).__name__, exc.reason)
    return ("file", data, declared)


def one_part(data: bytes, boundary: bytes = b"b0und", head: bytes = PART, tail=b"\r\n") -> bytes:
    return (
        b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n--" + boundary + b"--" + tail
    )


def test_the_forms_clients_send_are_read_without_the_parser(monkeypatch) -> None:
    request = httpx.Request("POST", "http://x/", files={"file": ("cat.png", PNG, "image/png")})
    body = request.read()
    content_type = request.headers["content-type"]
    expected = outcome(content_type, body, direct=False)
    assert expected == ("file", PNG, "image/png")

    def no_parser(*args, **kwargs):
        raise AssertionError("the parser was used")

    monkeypatch.setattr(multipart, "MultipartParser", no_parser)
    assert outcome(content_type, body, direct=True) == expected
    for tail in (b"", b"\r\n"):  # with or without a line break after the closing delimiter
        assert (
            outcome("multipart/form-data; boundary=b0und", one_part(PNG, tail=tail), True)[1] == PNG
        )


# Bodies where the direct reading must give way to the parser, or agree with it.
CASES = {
    "plain": one_part(PNG),
    "no type": one_part(PNG, head=b'Content-Disposition: form-data; name="file"; filename="a"'),
    "empty file": one_part(b""),
    "data with line breaks and dashes": one_part(b"\r\n--\r\n--b0un\r\n\r\n-- b0und--"),
    "the delimiter in the data": one_part(b"abc\r\n--b0und\r\nxyz"),
    "the delimiter without a line break": one_part(b"abc--b0und--def"),
    "preamble": b"preamble\r\n" + one_part(PNG),
    "epilogue": one_part(PNG, tail=b"\r\nepilogue"),
    "padding after the delimiter": one_part(PNG).replace(b"--b0und\r\n", b"--b0und  \r\n", 1),
    "two line breaks after the end": one_part(PNG, tail=b"\r\n\r\n"),
    "no closing delimiter": one_part(PNG, tail=b"")[: -len(b"\r\n--b0und--")],
    "no headers": b"--b0und\r\n\r\n" + PNG + b"\r\n--b0und--\r\n",
    "folded header": one_part(PNG, head=PART.replace(b"; filename", b";\r\n filename")),
    "header without a colon": one_part(PNG, head=PART + b"\r\nX-Odd"),
    "header name with a digit": one_part(PNG, head=PART + b"\r\nX-1: v"),
    "header name with a space": one_part(PNG, head=PART + b"\r\nX Y: v"),
    "empty header name": one_part(PNG, head=PART + b"\r\n: v"),
    "upper-case names": one_part(PNG, head=PART.upper().replace(b"FORM-DATA", b"form-data")),
    "repeated header": one_part(PNG, head=PART + b"\r\nContent-Type: image/gif"),
    "spaces around a value": one_part(PNG, head=PART.replace(b": image/png", b":   image/png  ")),
    "no name": one_part(PNG, head=b'Content-Disposition: form-data; filename="a"'),
    "another name": one_part(PNG, head=PART.replace(b'name="file"', b'name="image"')),
    "a plain field": one_part(b"text", head=b'Content-Disposition: form-data; name="file"'),
    "no disposition": one_part(PNG, head=b"Content-Type: image/png"),
    "a bare line feed": one_part(PNG, head=PART.replace(b"\r\nContent-Type", b"\nContent-Type")),
    "two parts": one_part(b"x", head=b'Content-Disposition: form-data; name="n"', tail=b"")[
        : -len(b"--\r\n") + 2
    ]
    + b"\r\n"
    + one_part(PNG)[len(b"--b0und\r\n") :],
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_direct_reading_answers_as_the_parser(name) -> None:
    content_type = "multipart/form-data; boundary=b0und"
    assert outcome(content_type, CASES[name], True) == outcome(content_type, CASES[name], False)


def test_the_direct_reading_answers_as_the_parser_on_mangled_forms() -> None:
    """Thousands of one-part forms with bytes inserted, dropped or changed at random,
    mostly around the framing: both ways agree on every one."""
    rng = random.Random(1811_01437)
    content_type = "multipart/form-data; boundary=b0und"
    alphabet = b'\r\n-: ;="b0undxAZ'
    seeds = [one_part(PNG[:40]), one_part(b""), one_part(b"--b0und"), CASES["repeated header"]]
    taken = 0
    for _ in range(4000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.choice(
                (rng.randrange(len(body)), rng.randrange(12), len(body) - 1 - rng.randrange(14))
            )
            change = rng.randrange(3)
            if change == 0:
                body.insert(at, rng.choice(alphabet))
            elif change == 1 and len(body) > 1:
                del body[at]
            else:
                body[at] = rng.choice(alphabet)
        direct, parsed = (
            outcome(content_type, bytes(body), True),
            outcome(content_type, bytes(body), False),
        )
        assert direct == parsed, bytes(body)
        taken += direct[0] == "file"
    assert taken > 100  # many of them were still forms with a file to read


def test_a_file_over_the_limit_is_refused_either_way() -> None:
    body = one_part(b"x" * 100)
    for direct in (True, False):
        assert outcome("multipart/form-data; boundary=b0und", body, direct, limit=99) == (
            "refused",
            "BodyTooLarge",
            "body_too_large",
        )
