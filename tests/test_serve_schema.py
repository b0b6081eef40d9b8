"""Property-based API tests: schemathesis generates requests from the server's own OpenAPI
schema (`/v2/openapi.json`, in-process over ASGI) -- valid ones and, for the infer body,
wrong types, missing fields and odd shapes -- and checks every answer: never a server
error, and status, headers, content type and body as the schema documents them.

The one 5xx the protocol allows is a 504 for a deadline the request's own (generated)
`slo_ms` made impossible; anything else >= 500 fails.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from test_serve_fixtures import tiny_checkpoint, tiny_stack

from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.policies import make_policy
from weightshare.serve.server import ServerConfig, create_app
from weightshare.serve.worker import InferenceWorker

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402


def _stack():
    import tempfile
    from pathlib import Path

    # Module level, not a fixture: `schema.parametrize` needs the app at import time.
    return tiny_stack(tiny_checkpoint(Path(tempfile.mkdtemp(prefix="ws-schema-"))))


STACK = _stack()


def _app(token: str | None = None):
    stack = STACK
    worker = InferenceWorker(stack.runtime, make_policy("slackfit"), stack.profile,
                             queue_capacity=64, metrics=ServeMetrics())
    # A TestClient outside `with` runs no lifespan: start the worker here (the lifespan
    # starts it only when it is not alive yet).
    worker.start()
    return create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes,
                      ServerConfig(max_request_batch=stack.profile.max_batch, token=token))


APP = _app()


async def _without_lifespan(scope, receive, send):
    """APP with lifespan events answered here: schemathesis opens a client (startup and
    shutdown) per request, and a shutdown drains and ends the one inference worker."""
    if scope["type"] != "lifespan":
        return await APP(scope, receive, send)
    while True:
        message = await receive()
        kind = message["type"].rpartition(".")[2]
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


schema = schemathesis.openapi.from_asgi("/v2/openapi.json", _without_lifespan)


def no_server_error_but_missed_deadlines(ctx, response, case):
    """Like schemathesis' not_a_server_error, except a 504 that says the deadline was missed
    (documented: a request whose deadline passes gets that error, never a late answer)."""
    if response.status_code < 500:
        return None
    if response.status_code == 504 and "deadline" in response.json().get("error", ""):
        return None
    raise AssertionError(f"server error {response.status_code} on {case.method} "
                         f"{case.formatted_path}: {response.text[:300]}")


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_and_never_fails(case):
    case.call_and_validate(excluded_checks=[not_a_server_error],
                           additional_checks=[no_server_error_but_missed_deadlines])


def test_schema_documents_the_infer_body_and_errors():
    doc = APP.openapi()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["inputs"]
    assert {"400", "401", "404", "429", "503", "504"} <= set(infer["responses"])
    assert "/v2/openapi.json" not in doc["paths"]  # the schema route documents the API only


def test_schema_route_needs_the_token_when_one_is_set():
    from fastapi.testclient import TestClient

    c = TestClient(_app(token="t0k"))
    assert c.get("/v2/openapi.json").status_code == 401
    r = c.get("/v2/openapi.json", headers={"Authorization": "Bearer t0k"})
    assert r.status_code == 200 and "/v2/models/{name}/infer" in r.json()["paths"]
