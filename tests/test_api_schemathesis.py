"""schemathesis fuzzes every operation in Fireside's own /openapi.json against a real server:
no 5xx, and every response (errors included) matches the documented status, type and schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_utils import RunningServer, assert_request_id, request_id_headers, run_server


@pytest.fixture(scope="module")
def fuzzed_server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    # The 256-token model bounds the work any one generated request can ask for.
    with run_server(tiny_model_dir) as s:
        yield s


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_openapi_conformance(fuzzed_server: RunningServer) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin lags pytest's internals.
    api = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/chat/completions",
        "/v1/completions",
        "/tokenize",
    }
    for op in operations:

        @given(case=op.as_strategy(), request_id=request_id_headers())
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def check(case: schemathesis.Case, request_id: str | None) -> None:
            # Point generated requests at the served model, so most of them reach generation.
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = "tiny"
            headers = {} if request_id is None else {"X-Request-ID": request_id}
            response = case.call_and_validate(checks=CHECKS, headers=headers, timeout=60)
            assert_request_id(response.headers, request_id)

        check()
