"""Property-based fuzzing of whole requests, sent as raw HTTP over sockets to a real gunicorn.

Whatever a client sends (any route, method, path segment, query, header value, Content-Length
form, chunk framing, JSON string escape or body), the answer is never a 5xx, never shows a
traceback, and the server keeps answering. The default run is repeatable; FMNIST_FUZZ_EXAMPLES
sets its size and draws a fresh random one, as for tests/test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.images import encode, garment

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FMNIST_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a request over real sockets: no per-example timing
    derandomize="FMNIST_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
MODEL = "fashion_mnist"
# Every route of the app, its path parameters in Werkzeug's <converter:name> form; a test below
# keeps this list equal to the app's URL map.
ROUTES = {
    "/": ("GET",),
    "/openapi.json": ("GET",),
    "/static/<path:filename>": ("GET",),
    "/healthz": ("GET",),
    "/readyz": ("GET",),
    "/predict": ("POST",),
    "/preprocess": ("POST",),
    "/v1/models/<model_name:name>": ("GET",),
    "/v1/models/<model_name:name>/versions/<version:version>": ("GET",),
    "/v1/models/<model_name:name>/metadata": ("GET",),
    "/v1/models/<model_name:name>/versions/<version:version>/metadata": ("GET",),
    "/v1/models/<model_name:name>:predict": ("POST",),
    "/v1/models/<model_name:name>/versions/<version:version>:predict": ("POST",),
    "/v2": ("GET",),
    "/v2/health/live": ("GET",),
    "/v2/health/ready": ("GET",),
    "/v2/models/<name>/ready": ("GET",),
    "/v2/models/<name>/versions/<version>/ready": ("GET",),
    "/v2/models/<name>": ("GET",),
    "/v2/models/<name>/versions/<version>": ("GET",),
    "/v2/models/<name>/infer": ("POST",),
    "/v2/models/<name>/versions/<version>/infer": ("POST",),
}
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")

# Text a client can put anywhere: printable, control characters, non-ASCII, lone surrogates.
ANY_TEXT = st.text(st.characters(codec=None), max_size=24)
SEGMENT_BYTES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"\xed\xa0\x80", b"\xef\xbc\x91", b"\x00", b"..", b"%", b"/", b":"]),
)


def escaped(data: bytes) -> str:
    """Percent-encode every byte that is not safe in a path segment or query value."""
    return quote(data, safe="")


def surrogate_escape(text: str) -> bytes:
    """UTF-8 bytes of any text, lone surrogates included (as a broken client would write them)."""
    return text.encode("utf-8", "surrogatepass")


segments = {
    "name": st.one_of(st.just(MODEL), SEGMENT_BYTES.map(escaped), ANY_TEXT.map(surrogate_escape)
                      .map(escaped)),
    "version": st.one_of(
        st.sampled_from(["1", "0", "01", "2", "-1", "+1", " 1", "9" * 30, "1e3", "0x1"]),
        st.integers(0, 10**40).map(str),
        SEGMENT_BYTES.map(escaped),
    ),
    "filename": st.one_of(
        st.sampled_from(["app.js", "style.css", "../../etc/passwd", "%2e%2e/x", "nope"]),
        SEGMENT_BYTES.map(escaped),
    ),
}  # fmt: skip


@st.composite
def paths(draw: st.DrawFn) -> tuple[str, str]:
    """A route's path with drawn parameters and query, and the route's own method."""
    rule = draw(st.sampled_from(sorted(ROUTES)))
    path = PARAMETER.sub(lambda match: draw(segments[match.group(1)]), rule)
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["top_k", "invert", "x", ""]),
                st.one_of(st.sampled_from(["1", "3", "auto", "TRUE", "²", "9" * 5000]), ANY_TEXT),
            ),
            max_size=3,
        )
    )
    query = "&".join(f"{k}={escaped(surrogate_escape(v))}" for k, v in pairs)
    return path + (f"?{query}" if query else ""), ROUTES[rule][0]


def json_values() -> st.SearchStrategy:
    """JSON documents with awkward strings and numbers: escapes, surrogates, huge integers."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        ANY_TEXT,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(ANY_TEXT, children, max_size=4),
        ),
        max_leaves=12,
    )


PIXELS = [[0] * 28] * 28


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON body shaped like one of the protocols' requests, with drawn values spliced in."""
    value = draw(json_values())
    tensor = {"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "data": PIXELS}
    document = draw(
        st.sampled_from(
            [
                value,
                {"instances": [PIXELS], "extra": value},
                {"instances": value},
                {"inputs": value},
                {"signature_name": value, "instances": [PIXELS]},
                {"id": value, "inputs": [tensor]},
                {"inputs": [{**tensor, "name": value}]},
                {"inputs": [tensor], "outputs": [{"name": value}], "parameters": value},
                {"inputs": [{**tensor, "parameters": {"binary_data_size": value}}]},
            ]
        )
    )
    # The standard library writes a lone surrogate as its \\ud800 escape: valid JSON.
    return json.dumps(document).encode()


PNG = encode(garment())


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A body and its Content-Type."""
    kind = draw(st.sampled_from(["json", "png", "bytes", "multipart", "none"]))
    if kind == "json":
        return draw(json_bodies()), "application/json"
    if kind == "png":
        cut = draw(st.integers(0, len(PNG)))
        return PNG[: cut if draw(st.booleans()) else len(PNG)], "image/png"
    if kind == "multipart":
        boundary = draw(st.sampled_from(["zz", "", "a b", "x" * 80]))
        field = draw(st.sampled_from(["image", "top_k", "invert", ""]))
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        return part + PNG + f"\r\n--{boundary}--\r\n".encode(), (
            f"multipart/form-data; boundary={boundary}"
        )
    content_type = draw(
        st.one_of(
            st.sampled_from(
                ["application/json", "image/png", "text/plain", "multipart/form-data", ""]
            ),
            st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
        )
    )
    return (draw(st.binary(max_size=256)) if kind == "bytes" else b""), content_type


@st.composite
def framings(draw: st.DrawFn, body: bytes) -> tuple[list[str], bytes]:
    """How the body is framed: its length header (any form) or chunks (well made or not)."""
    form = draw(st.sampled_from(["length", "length_text", "chunked", "chunked_broken", "none"]))
    if form == "length":
        return [f"Content-Length: {len(body)}"], body
    if form == "length_text":
        length = draw(
            st.one_of(
                st.sampled_from(["-1", "+5", " 3", "0x10", "1e3", "", "١٢", str(10**20)]),
                st.integers(0, 10**25).map(str),
            )
        )
        return [f"Content-Length: {length}"], body
    if form == "none":
        return [], body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3, unique=True)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    if form == "chunked":
        framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        return ["Transfer-Encoding: chunked"], framed + b"0\r\n\r\n"
    size = draw(st.sampled_from(["zz", "-3", "3;=x", "3 ", "ffffffffffffffffffff", "", "0x3"]))
    end = draw(st.sampled_from([b"0\r\n\r\n", b"", b"0\r\nContent-Length: 5\r\n\r\n"]))
    first = pieces[0] if pieces else b"abc"
    return ["Transfer-Encoding: chunked"], f"{size}\r\n".encode() + first + b"\r\n" + end


@st.composite
def requests_bytes(draw: st.DrawFn) -> bytes:
    """One whole HTTP/1.1 request, as bytes."""
    path, method = draw(paths())
    # Mostly the route's own method, so that most requests reach the route's code.
    method = draw(st.sampled_from([method] * 6 + ["PUT", "HEAD", "OPTIONS", "DELETE", "BREW"]))
    body, content_type = draw(bodies())
    headers, framed = draw(framings(body))
    latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
    optional = {
        "Content-Type": st.just(content_type),
        "X-Request-ID": latin1,
        "Inference-Header-Content-Length": st.one_of(
            st.sampled_from(["0", "-1", "99999999", "2", "١"]), latin1
        ),
        "Content-Encoding": st.sampled_from(["gzip", "identity", "br, gzip"]),
        "Expect": st.just("100-continue"),
        "Accept": latin1,
    }
    chosen = draw(st.sets(st.sampled_from(sorted(optional)), max_size=len(optional)))
    headers += [f"{name}: {draw(optional[name])}" for name in sorted(chosen)]
    head = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *headers, "Connection: close"])
    return surrogate_escape(head) + b"\r\n\r\n" + framed


def exchange(port: int, request: bytes) -> bytes:
    """Send the request and end the sending side (so a short body ends), read to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_the_fuzzed_routes_are_the_apps_routes(app):
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert set(ROUTES) == rules


@FUZZ
@given(request=requests_bytes())
def test_no_request_gets_a_5xx_or_a_traceback(live_server, request):
    answer = exchange(live_server.port, request)
    while answer.startswith(b"HTTP/1.1 1"):  # 100 Continue, for "Expect: 100-continue"
        answer = answer.partition(b"\r\n\r\n")[2]
    if answer:  # gunicorn may close a connection it cannot parse without a word
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, (request[:600], answer[:600])
    assert b"Traceback" not in answer


def test_the_server_is_healthy_and_logged_no_traceback_after_the_fuzzing(live_server):
    assert requests.get(live_server.url + "/readyz", timeout=10).status_code == 200
    assert live_server.tracebacks() == []
    log = live_server.log_text()
    assert '"status": 5' not in log and '"status":5' not in log
