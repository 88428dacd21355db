"""Hostile and malformed requests, over real HTTP to a real gunicorn: each gets a clear 4xx.

Every case expects an RFC 9457 problem document with a stable code, and the server must stay
healthy afterwards. The files are real bytes, built by hand where Pillow cannot write them.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import numpy as np
import pytest
import requests

from harness import hostile
from harness.images import encode, garment
from service.errors import ServiceError
from service.settings import Settings

pytestmark = pytest.mark.slow

DEFAULTS = Settings()
PNG = encode(garment())
JPEG = encode(garment(), "JPEG", quality=90)
ZEROS = [[0] * 28] * 28
MULTIPART_PNG = (
    b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--zz--\r\n"
)


def raw(data: bytes, content_type: str | None = "image/png") -> dict:
    """A raw-body request."""
    return {"data": data, "headers": {"Content-Type": content_type} if content_type else {}}


def upload(*files: tuple[str, tuple], **fields: str) -> dict:
    """A multipart request with (field, (filename, bytes[, type])) files and text fields."""
    return {"files": list(files) + [(name, (None, value)) for name, value in fields.items()]}


def instances(*items) -> dict:
    """A JSON request in TensorFlow Serving's row format."""
    return {"json": {"instances": list(items)}}


def json_text(text: str) -> dict:
    """A JSON body given as text, for what json= cannot express."""
    return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}


def b64(data: bytes) -> dict:
    """One base64 instance."""
    return {"b64": base64.b64encode(data).decode()}


CASES = [
    # Body and Content-Type
    ("empty_body", raw(b""), 415, "not_an_image"),
    ("empty_body_no_content_type", raw(b"", None), 415, "unsupported_media_type"),
    ("png_without_content_type", raw(PNG, None), 415, "unsupported_media_type"),
    ("text_plain", raw(PNG, "text/plain"), 415, "unsupported_media_type"),
    ("octet_stream", raw(PNG, "application/octet-stream"), 415, "unsupported_media_type"),
    (
        "url_encoded_form",
        raw(b"image=abc", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    ("svg_content_type", raw(hostile.SVG, "image/svg+xml"), 415, "unsupported_media_type"),
    ("body_over_limit", raw(b"\x89PNG" + bytes(DEFAULTS.max_body_bytes)), 413, "body_too_large"),
    # Multipart
    ("multipart_without_file", upload(note="no file here"), 400, "malformed_request"),
    ("multipart_wrong_field", upload(("file", ("a.png", PNG))), 400, "malformed_request"),
    (
        "multipart_without_boundary",
        raw(b"--x\r\n\r\n--x--", "multipart/form-data"),
        400,
        "malformed_request",
    ),
    (
        "multipart_broken_body",
        raw(b"garbage", "multipart/form-data; boundary=zz"),
        400,
        "malformed_request",
    ),
    (
        "multipart_thousands_of_parts",
        {"files": [("note", (None, "x"))] * 3000},
        413,
        "body_too_large",
    ),
    ("multipart_huge_text_field", upload(note="x" * 200_000), 413, "body_too_large"),
    (
        "multipart_without_closing_boundary",
        raw(MULTIPART_PNG[: MULTIPART_PNG.rindex(b"--zz--")], "multipart/form-data; boundary=zz"),
        400,
        "malformed_request",
    ),
    (
        "multipart_header_flood",
        raw(
            b"--zz\r\n" + b"X-Filler: 1\r\n" * 100 + MULTIPART_PNG[len(b"--zz\r\n") :],
            "multipart/form-data; boundary=zz",
        ),
        413,
        "body_too_large",
    ),
    (
        "multipart_text_named_png",
        upload(("image", ("shirt.png", b"just text", "image/png"))),
        415,
        "not_an_image",
    ),
    (
        "multipart_too_many_images",
        {"files": [("image", ("a.png", PNG))] * (DEFAULTS.max_batch + 1)},
        413,
        "batch_too_large",
    ),
    (
        "multipart_bad_top_k",
        upload(("image", ("a.png", PNG)), top_k="99"),
        400,
        "invalid_parameter",
    ),
    # Not images, and refused formats
    ("random_bytes", raw(np.random.default_rng(7).bytes(4096)), 415, "not_an_image"),
    ("svg", raw(hostile.SVG), 415, "not_an_image"),
    ("xml_entity_bomb", raw(hostile.XML_BOMB), 415, "not_an_image"),
    ("pdf", raw(hostile.PDF), 415, "not_an_image"),
    ("eps", raw(hostile.pillow_file("EPS")), 415, "unsupported_image_format"),
    ("psd", raw(hostile.psd()), 415, "unsupported_image_format"),
    ("fits", raw(hostile.fits()), 415, "unsupported_image_format"),
    ("ico", raw(hostile.pillow_file("ICO")), 415, "unsupported_image_format"),
    ("tga", raw(hostile.pillow_file("TGA")), 415, "unsupported_image_format"),
    ("ppm", raw(hostile.pillow_file("PPM")), 415, "unsupported_image_format"),
    # Broken files in allowed formats
    ("truncated_png", raw(PNG[: len(PNG) // 2]), 400, "corrupt_image"),
    ("truncated_jpeg", raw(JPEG[: len(JPEG) // 2], "image/jpeg"), 400, "corrupt_image"),
    ("png_header_only", raw(hostile.png_header(30, 30)), 400, "corrupt_image"),
    ("png_bad_crc", raw(hostile.png_with_bad_crc()), 400, "corrupt_image"),
    ("png_corrupt_zlib", raw(hostile.png_with_corrupt_zlib()), 400, "corrupt_image"),
    ("png_zero_width", raw(hostile.png_declaring(0, 30)), 400, "corrupt_image"),
    ("png_zero_height", raw(hostile.png_declaring(30, 0)), 400, "corrupt_image"),
    ("gif_zero_size", raw(hostile.gif((0, 0), [(0, 0, 0, 0)]), "image/gif"), 400, "corrupt_image"),
    ("bmp_zero_width", raw(hostile.bmp_declaring(0, 30), "image/bmp"), 400, "corrupt_image"),
    # Decompression bombs: sizes claimed in headers
    ("png_huge_dimensions", raw(hostile.png_declaring(100_000, 100_000)), 413, "image_too_large"),
    ("png_just_over_pixel_limit", raw(hostile.png_declaring(5001, 5000)), 413, "image_too_large"),
    (
        "gif_frame_huge_extent",
        raw(hostile.gif((16, 16), [(0, 0, 60_000, 60_000)]), "image/gif"),
        413,
        "image_too_large",
    ),
    (
        "gif_frame_far_offset",
        raw(hostile.gif((16, 16), [(65_000, 65_000, 500, 500)]), "image/gif"),
        413,
        "image_too_large",
    ),
    (
        "gif_huge_screen",
        raw(hostile.gif((60_000, 60_000), [(0, 0, 8, 8)]), "image/gif"),
        413,
        "image_too_large",
    ),
    (
        "bmp_huge_dimensions",
        raw(hostile.bmp_declaring(100_000, 100_000), "image/bmp"),
        413,
        "image_too_large",
    ),
    # Images that decode but cannot be classified
    ("extreme_aspect_ratio", raw(hostile.png_declaring(2000, 10)), 422, "unusable_image"),
    ("blank_image", raw(encode(np.full((40, 40), 255, np.uint8))), 422, "unusable_image"),
    ("animated_gif", raw(hostile.animated("GIF"), "image/gif"), 422, "unusable_image"),
    ("animated_png", raw(hostile.animated("PNG")), 422, "unusable_image"),
    (
        "animated_webp",
        raw(hostile.animated("WEBP", lossless=True), "image/webp"),
        422,
        "unusable_image",
    ),
    (
        "gif_many_frames",
        raw(hostile.gif((8, 8), [(0, 0, 8, 8)] * 50_000), "image/gif"),
        422,
        "unusable_image",
    ),
    ("multipage_tiff", raw(hostile.multipage_tiff(), "image/tiff"), 422, "unusable_image"),
    # JSON
    ("malformed_json", json_text('{"instances": [1, 2'), 400, "malformed_request"),
    (
        "json_not_utf8",
        raw(b'{"instances": ["\xff\xfe"]}', "application/json"),
        400,
        "malformed_request",
    ),
    ("json_array_top_level", json_text("[[0]]"), 400, "malformed_request"),
    ("json_without_instances", {"json": {"inputs": [ZEROS]}}, 400, "malformed_request"),
    ("json_deeply_nested", json_text("[" * 200_000 + "]" * 200_000), 400, "malformed_request"),
    (
        "json_deeply_nested_instance",
        instances(json.loads("[" * 500 + "0" + "]" * 500)),
        422,
        "invalid_pixels",
    ),
    ("invalid_base64", instances({"b64": "not base64!"}), 400, "malformed_request"),
    ("base64_with_newlines", instances({"b64": "iVBO\nRw0K"}), 400, "malformed_request"),
    ("base64_of_text", instances(b64(b"hello")), 415, "not_an_image"),
    ("b64_with_extra_key", instances({"b64": "", "url": "http://x"}), 400, "malformed_request"),
    ("instance_is_a_number", instances(7), 400, "malformed_request"),
    ("pixels_nan", json_text('{"instances": [[[NaN]]]}'), 400, "malformed_request"),
    (
        "pixels_infinity",
        json_text('{"instances": [[[Infinity, -Infinity]]]}'),
        400,
        "malformed_request",
    ),
    (
        "pixels_overflow_to_infinity",
        json_text(json.dumps({"instances": [ZEROS]}).replace("0", "1e400", 1)),
        422,
        "invalid_pixels",
    ),
    (
        "pixels_huge_integer",
        json_text(json.dumps({"instances": [ZEROS]}).replace("0", "1" + "0" * 400, 1)),
        422,
        "invalid_pixels",
    ),
    ("pixels_negative", instances([[-1] * 28] * 28), 422, "invalid_pixels"),
    ("pixels_over_255", instances([[256] * 28] * 28), 422, "invalid_pixels"),
    ("pixels_strings", instances([["0"] * 28] * 28), 422, "invalid_pixels"),
    ("pixels_ragged", instances([[0] * 28] * 27 + [[0] * 29]), 422, "invalid_pixels"),
    ("pixels_wrong_shape", instances([[0] * 28] * 27), 422, "invalid_pixels"),
    ("pixels_rgb", instances([[[0, 0, 0]] * 28] * 28), 422, "invalid_pixels"),
    (
        "json_batch_over_limit",
        instances(*[ZEROS] * (DEFAULTS.max_batch + 1)),
        413,
        "batch_too_large",
    ),
    ("json_empty_batch", instances(), 400, "malformed_request"),
    # Parameters
    ("top_k_superscript_digit", {**raw(PNG), "params": {"top_k": "²"}}, 400, "invalid_parameter"),
    (
        "top_k_thousands_of_digits",
        {**raw(PNG), "params": {"top_k": "9" * 5000}},
        400,
        "invalid_parameter",
    ),
    ("invert_unknown", {**raw(PNG), "params": {"invert": "perhaps"}}, 400, "invalid_parameter"),
    # The decoding budget (docs/security.md): within the size limits, too costly to decode
    (
        "jpeg_scans_over_the_budget",
        raw(hostile.jpeg_repeated_scan(2000, 2000, 1_000), "image/jpeg"),
        413,
        "image_too_large",
    ),
    (
        "jpeg_thousands_of_markers",
        raw(hostile.jpeg_padded(markers=5_000), "image/jpeg"),
        413,
        "image_too_large",
    ),
    (
        "jpeg_fill_bytes_in_the_header",
        raw(hostile.jpeg_padded(fill=3_000_000), "image/jpeg"),
        413,
        "image_too_large",
    ),
    (
        "png_tens_of_thousands_of_chunks",
        raw(hostile.png_image(28, 28, before=hostile.png_chunk(b"prIv", b"") * 70_000)),
        413,
        "image_too_large",
    ),
    (
        "png_image_data_in_tiny_chunks",
        raw(hostile.png_image(28, 28, idat_size=1, after=hostile.png_chunk(b"IDAT", b"") * 70_000)),
        413,
        "image_too_large",
    ),
    (
        "gif_comment_in_one_byte_blocks",
        raw(hostile.gif_comment(70_000), "image/gif"),
        413,
        "image_too_large",
    ),
    (
        "bmp_rle_line_ends",
        raw(hostile.bmp_rle_line_ends(5000, 5000), "image/bmp"),
        413,
        "image_too_large",
    ),
    (
        "bmp_rle4_runs",
        raw(hostile.bmp_rle_runs(5000, 5000, rle4=True), "image/bmp"),
        413,
        "image_too_large",
    ),
    (
        "tiff_hundreds_of_thousands_of_strips",
        raw(hostile.tiff_strips(28, 28, 300_000), "image/tiff"),
        413,
        "image_too_large",
    ),
]


def test_the_table_covers_every_error_code_for_client_input():
    client_codes = {cls.code for cls in _subclasses(ServiceError) if 400 <= cls.status < 500} - {
        "model_not_found",
        "request_timeout",
        "model_version_not_found",
        "invalid_tensor",
    }  # routes, deadlines and the /v1 and /v2 tensor protocols: tested elsewhere
    assert client_codes <= {case[3] for case in CASES}
    assert len(CASES) >= 30


def _subclasses(cls: type) -> set[type]:
    """Every subclass of `cls`, recursively."""
    return {sub for child in cls.__subclasses__() for sub in (child, *_subclasses(child))}


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_request_gets_a_clear_4xx(live_server, request_kwargs, status, code):
    response = requests.post(live_server.url + "/predict", timeout=60, **request_kwargs)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("name", list(hostile.careful_images()))
def test_valid_images_that_need_care_are_classified_like_the_plain_photo(live_server, name):
    data, content_type = hostile.careful_images()[name]
    reference = requests.post(
        live_server.url + "/predict",
        data=encode(hostile.photo()),
        headers={"Content-Type": "image/png"},
        timeout=30,
    ).json()["predictions"][0]
    response = requests.post(
        live_server.url + "/predict",
        data=data,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    prediction = response.json()["predictions"][0]
    assert prediction["label"] == reference["label"]
    assert prediction["confidence"] == pytest.approx(reference["confidence"], abs=0.05)


def test_chunked_body_over_the_limit_is_413(live_server):
    chunk = bytes(1 << 20)
    chunks = iter([b"\x89PNG"] + [chunk] * (DEFAULTS.max_body_bytes // len(chunk) + 1))
    response = requests.post(
        live_server.url + "/predict",
        data=chunks,
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read(live_server, chunked):
    body = b"x" * DEFAULTS.max_body_bytes
    response = requests.post(
        live_server.url + "/predict",
        data=iter([body]) if chunked else body,
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 415 and response.json()["code"] == "not_an_image"


@pytest.mark.parametrize(
    "path", ["/v1/models/fashion_mnist:predict", "/v2/models/fashion_mnist/infer"]
)
def test_a_chunked_protocol_body_over_the_limit_is_413_in_the_protocols_form(live_server, path):
    chunk = b" " * (1 << 20)
    chunks = iter([b"{"] + [chunk] * (DEFAULTS.max_body_bytes // len(chunk) + 1))
    response = requests.post(
        live_server.url + path,
        data=chunks,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    answer = response.json()
    assert set(answer) == {"error", "code"} and answer["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/v1/models/fashion_mnist:predict", {"instances": [[1, 2]]}),
        ("/v2/models/fashion_mnist/infer", {"inputs": [{"name": "nope"}]}),
    ],
)
def test_a_refused_protocol_request_keeps_its_connection_usable(live_server, path, bad):
    pixels = [[0] * 28] * 28
    good = (
        {"instances": [pixels]}
        if path.startswith("/v1/")
        else {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28],
                          "data": pixels}]}
    )  # fmt: skip
    with requests.Session() as session:  # one keep-alive connection
        for _ in range(5):
            refused = session.post(live_server.url + path, json=bad, timeout=30)
            assert refused.status_code == 400 and refused.json()["code"] == "invalid_tensor"
            assert session.post(live_server.url + path, json=good, timeout=30).status_code == 200


def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes to the server and read until it closes or 10 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"Connection: close" in answer:
                break
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Content-Length and Transfer-Encoding together: the classic smuggling request.
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "cl_and_te",
        "two_content_lengths",
        "te_not_chunked_last",
        "huge_header",
        "too_many_headers",
        "huge_request_line",
    ],
)
def test_malformed_http_is_refused_by_gunicorn_before_the_app(live_server, request_bytes):
    answer = http_exchange(live_server.port, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # no second, smuggled response
    assert requests.get(live_server.url + "/readyz", timeout=5).status_code == 200


def test_the_hand_built_multipart_body_the_table_breaks_is_itself_accepted(live_server):
    response = requests.post(
        live_server.url + "/predict",
        data=MULTIPART_PNG,
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 1


def test_server_stays_healthy_after_the_hostile_table(live_server):
    assert requests.get(live_server.url + "/readyz", timeout=5).status_code == 200
    response = requests.post(
        live_server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 200
    assert live_server.tracebacks() == []


def test_multipart_limits_leave_room_for_a_full_batch_and_its_parameters(live_server):
    files = [("image", (f"{i}.png", PNG, "image/png")) for i in range(DEFAULTS.max_batch)]
    response = requests.post(
        live_server.url + "/predict",
        files=files + [("top_k", (None, "3")), ("invert", (None, "auto"))],
        timeout=120,
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == DEFAULTS.max_batch


def test_a_rejected_body_does_not_break_the_next_request_on_the_connection(live_server):
    with requests.Session() as session:  # one keep-alive connection
        for _ in range(10):
            rejected = session.post(
                live_server.url + "/predict", files=[("note", (None, "x"))] * 3000, timeout=30
            )
            assert rejected.status_code == 413
            after = session.post(
                live_server.url + "/predict",
                data=PNG,
                headers={"Content-Type": "image/png"},
                timeout=30,
            )
            assert after.status_code == 200


def chunked(path: str, body: bytes, content_type: str = "image/png") -> bytes:
    """A POST whose body is sent as given, framed as chunked (the framing may be broken)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + body


def with_length(method: str, path: str, length: str, body: bytes = b"") -> bytes:
    """A request declaring any Content-Length text, with `body` after its headers."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def v2_infer(request_id: str) -> bytes:
    """An Open Inference Protocol request whose "id" is the given JSON string text."""
    pixels = ",".join(["0"] * 28 * 28)
    text = (
        f'{{"id": "{request_id}", "inputs": [{{"name": "images", "datatype": "UINT8", '
        f'"shape": [1, 28, 28], "data": [{pixels}]}}]}}'
    ).encode()
    return with_length("POST", "/v2/models/fashion_mnist/infer", str(len(text)), text)


HUGE_LENGTH = "100000000000000000000"  # 10**20: more than 64 bits
FULLWIDTH_ONE = "%EF%BC%91"  # U+FF11, a digit to Python's str.isdigit and to regex \d
PREDICT, V1_PREDICT, V2_INFER = (
    "/predict",
    "/v1/models/fashion_mnist:predict",
    "/v2/models/fashion_mnist/infer",
)

# Requests broken below the level requests can send: framing, lengths, escapes, path digits.
# Each: (id, raw bytes, closes its sending side early, status, code).
RAW_CASES = [
    *[
        (f"chunk_size_{name}_{route}", chunked(path, body), False, 400, "malformed_request")
        for route, path in (("predict", PREDICT), ("v1", V1_PREDICT), ("v2", V2_INFER))
        for name, body in (
            ("not_hex", b"zz\r\nabc\r\n0\r\n\r\n"),
            ("negative", b"-3\r\nabc\r\n0\r\n\r\n"),
            ("empty_extension_name", b"3;=x\r\nabc\r\n0\r\n\r\n"),
            ("without_crlf", b"3\r\nabcXY0\r\n\r\n"),
            ("content_length_trailer", b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"),
        )
    ],
    ("chunked_cut_mid_chunk", chunked(PREDICT, b"10\r\nabc"), True, 400, "malformed_request"),
    ("huge_length_healthz", with_length("GET", "/healthz", HUGE_LENGTH), False, 200, None),
    ("huge_length_readyz", with_length("GET", "/readyz", HUGE_LENGTH), False, 200, None),
    (
        "huge_length_predict",
        with_length("POST", PREDICT, HUGE_LENGTH),
        False,
        413,
        "body_too_large",
    ),
    ("huge_length_v2", with_length("POST", V2_INFER, HUGE_LENGTH), False, 413, "body_too_large"),
    ("v2_id_lone_surrogate", v2_infer("\\ud800"), False, 200, None),
    (
        "v1_fullwidth_version",
        with_length(
            "POST", f"/v1/models/fashion_mnist/versions/{FULLWIDTH_ONE}:predict", "2", b"{}"
        ),
        False,
        404,
        "not_found",
    ),
    (
        "v1_fullwidth_version_metadata",
        with_length("GET", f"/v1/models/fashion_mnist/versions/{FULLWIDTH_ONE}/metadata", "0"),
        False,
        404,
        "not_found",
    ),
    (
        "v2_fullwidth_version",
        with_length("POST", f"/v2/models/fashion_mnist/versions/{FULLWIDTH_ONE}/infer", "2", b"{}"),
        False,
        404,
        "model_version_not_found",
    ),
]


def raw_exchange(port: int, request: bytes, half_close: bool) -> tuple[int, bytes]:
    """Send raw bytes (then, if asked, end the sending side), read the answer to its close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("request_bytes", "half_close", "status", "code"),
    [case[1:] for case in RAW_CASES],
    ids=[case[0] for case in RAW_CASES],
)
def test_a_request_broken_below_http_libraries_gets_its_4xx(
    live_server, request_bytes, half_close, status, code
):
    answer_status, body = raw_exchange(live_server.port, request_bytes, half_close)
    assert answer_status == status, body[:300]
    if code is not None:
        assert json.loads(body)["code"] == code
    assert b"Traceback" not in body


def test_a_content_length_beyond_64_bits_is_logged_once(live_server):
    request_id = "huge-length-" + np.random.default_rng().bytes(8).hex()
    request = with_length("GET", "/healthz", HUGE_LENGTH).replace(
        b"Host: x\r\n", f"Host: x\r\nX-Request-ID: {request_id}\r\n".encode()
    )
    assert raw_exchange(live_server.port, request, False)[0] == 200

    def logged() -> list[dict]:
        lines = live_server.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if request_id in line]

    deadline = time.monotonic() + 10  # the access log is written by a thread, in batches
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = logged()
    assert line["status"] == 200 and line["request_bytes"] == int(HUGE_LENGTH)
