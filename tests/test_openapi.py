"""The OpenAPI document: it names every route and error code, and schemathesis holds the live
service to it."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from openapi_spec_validator import OpenAPIV31SpecValidator

from harness import ROOT
from harness.server import LiveServer
from service import errors
from service.api.openapi import document
from service.settings import Settings

# Flask adds these to every route by itself; HTTP defines them from GET and the Allow header.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
SCHEMATHESIS_CONFIG = ROOT / "tests" / "schemathesis.toml"
ARTIFACTS = ROOT / "test-artifacts" / "schemathesis"


def openapi_path(rule: str) -> str:
    """Spell a Flask rule as an OpenAPI path template: /v1/models/<name> -> /v1/models/{name}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def service_errors() -> list[type[errors.ServiceError]]:
    """Every subclass of ServiceError, however deep."""
    found, pending = [], [errors.ServiceError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.append(cls)
    return found[1:]


def readme_error_codes() -> set[str]:
    """The codes in the README's table of errors."""
    section = (ROOT / "README.md").read_text().split("### Errors", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if re.match(r"\| \d{3} \|", line)]
    return {code for row in rows for code in re.findall(r"`([a-z_]+)`", row[2])}


def documented_problems(spec: dict) -> Iterator[tuple[int, str]]:
    """(status, code) for every code that a documented problem response names."""
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    for part in media.get("schema", {}).get("allOf", []):
                        for code in part.get("properties", {}).get("code", {}).get("enum", []):
                            yield int(status), code


def test_every_route_is_documented_and_every_documented_path_is_a_route(app):
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - IMPLICIT_METHODS
    }
    spec = app.test_client().get("/openapi.json").json
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented


def test_every_error_code_is_documented_in_the_schema_and_the_readme(app):
    spec = document(app)
    enum = set(spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    service_codes = {cls.code for cls in service_errors()}
    werkzeug_codes = {"not_found", "method_not_allowed", "internal_error"}
    assert enum == service_codes | werkzeug_codes
    # 405 answers only methods a route does not have, so no operation lists it.
    assert {code for _, code in documented_problems(spec)} == enum - {"method_not_allowed"}
    assert readme_error_codes() == enum - {"internal_error"}


def test_each_documented_code_sits_under_its_own_status(app):
    statuses = {cls.code: cls.status for cls in service_errors()}
    for status, code in documented_problems(document(app)):
        assert statuses.get(code, status) == status, (code, status)


def test_the_document_is_valid_openapi_3_1(app):
    spec = document(app)
    assert spec["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(spec).validate()
    broken = copy.deepcopy(spec)
    broken["paths"]["/predict"]["post"]["responses"] = "none"
    with pytest.raises(Exception, match="none"):
        schemathesis.openapi.from_dict(broken).validate()


def test_the_served_document_passes_the_openapi_specification_validator(client):
    spec = client.get("/openapi.json").json
    assert list(OpenAPIV31SpecValidator(spec).iter_errors()) == []
    # The validator checks schemas too: a null default on an array field was refused.
    broken = copy.deepcopy(spec)
    broken["components"]["schemas"]["Prediction"]["properties"]["top_k"]["default"] = None
    assert list(OpenAPIV31SpecValidator(broken).iter_errors())


def test_limits_in_the_document_follow_the_settings(app):
    spec = document(app, Settings(max_batch=5))
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["instances"]["maxItems"] == 5
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["maxItems"] == 5
    single = spec["paths"]["/preprocess"]["post"]["requestBody"]["content"]
    assert single["application/json"]["schema"]["properties"]["instances"]["maxItems"] == 1
    tf_serving = spec["components"]["schemas"]["TfPredictRequest"]["properties"]
    assert tf_serving["instances"]["maxItems"] == tf_serving["inputs"]["oneOf"][0]["maxItems"] == 5


def test_protocol_paths_document_the_protocol_error_form(app):
    spec = document(app)
    for path, operations in spec["paths"].items():
        protocol = (path + "/").startswith(errors.PROTOCOL_PREFIXES)
        expected = (
            ("application/json", "ProtocolError") if protocol else (errors.PROBLEM_JSON, "Problem")
        )
        for operation in operations.values():
            for status, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    # Error answers are an allOf of the error schema and their codes; /readyz's
                    # 503 is a status, not an error.
                    for part in content.get("schema", {}).get("allOf", [])[:1]:
                        assert (media, part["$ref"].rsplit("/", 1)[1]) == expected, (path, status)


@pytest.fixture(scope="module")
def fuzzed_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A gunicorn server of its own, so the fuzzer's traffic touches no other test's server."""
    server = LiveServer(tiny_model_dir, tmp_path_factory.mktemp("fuzzed") / "gunicorn.log")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(fuzzed_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    junit = ARTIFACTS / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(SCHEMATHESIS_CONFIG),
        "--no-color",
        "run",
        fuzzed_server.url + "/openapi.json",
        "--seed",
        "20261127",  # the same cases each run: CI is reproducible, a failure replays
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary + run.stderr[-2000:] + fuzzed_server.logs()
    cases = re.search(r"(\d+) generated, \1 passed", summary)
    assert cases and int(cases[1]) > 100, summary
    print(f"schemathesis: {cases[0]}; report: {junit}")
    assert fuzzed_server.tracebacks() == []


def test_every_route_that_reads_a_body_documents_its_deadline_answers(app):
    # Every POST goes through the data plane: its body is read under the request deadline.
    spec = document(app)
    posts = {path: ops["post"]["responses"] for path, ops in spec["paths"].items() if "post" in ops}
    assert len(posts) == 6  # /predict, /preprocess, and :predict and infer with and without N
    for path, responses in posts.items():
        timeout = responses["408"]["content"]
        codes = next(iter(timeout.values()))["schema"]["allOf"][1]["properties"]["code"]["enum"]
        assert codes == ["request_timeout"], path
        unavailable = next(iter(responses["503"]["content"].values()))["schema"]["allOf"][1]
        assert "deadline_exceeded" in unavailable["properties"]["code"]["enum"], path
