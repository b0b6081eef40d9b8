"""The Open Inference Protocol server: endpoints, errors, auth, admission control, metrics,
graceful shutdown, an unmodified tritonclient, and the load generator against it."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import warnings

import httpx
import numpy as np
import pytest
import torch
from test_serve_fixtures import tiny_checkpoint, tiny_stack

from weightshare.serve.loadgen import LoadConfig, run_load_sync
from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.policies import make_policy
from weightshare.serve.server import ServerConfig, ServerThread, create_app
from weightshare.serve.traces import make_trace
from weightshare.serve.worker import InferenceWorker

with warnings.catch_warnings():  # starlette's TestClient nags about httpx on import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SHAPE = [1, 28, 28]
URL = "/v2/models/weightshare/infer"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = tiny_stack(tiny_checkpoint(tmp_path_factory.mktemp("serve-http")))
    yield s
    s.close()


def make_app(stack, *, policy: str = "slackfit", capacity: int = 64, backend=None, **cfg):
    worker = InferenceWorker(backend or stack.runtime, make_policy(policy), stack.profile,
                             queue_capacity=capacity, metrics=ServeMetrics())
    config = ServerConfig(max_request_batch=stack.profile.max_batch, **cfg)
    return create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes, config)


def body(n: int = 1, data=None, **params) -> dict:
    if data is None:
        data = torch.randn(n, *SHAPE).flatten().tolist()
    out = {"inputs": [{"name": "input", "shape": [n, *SHAPE], "datatype": "FP32",
                       "data": data}]}
    if params:
        out["parameters"] = params
    return out


@pytest.fixture(scope="module")
def client(stack):
    with TestClient(make_app(stack)) as c:
        yield c


# --------------------------------------------------------------------- protocol
def test_health_and_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/weightshare/ready").status_code == 200
    meta = client.get("/v2/models/weightshare").json()
    assert meta["name"] == "weightshare" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPE]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get("/v2/models/weightshare/versions/1").json() == meta
    cfg = client.get("/v2/models/weightshare/config").json()
    assert [d["name"] for d in cfg["deployed"]] == ["s0", "s1", "s2"]
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]


def test_infer_json(client, stack):
    x = torch.randn(2, *SHAPE)
    r = client.post(URL, json={**body(2, x.flatten().tolist(), slo_ms=5000), "id": "abc"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "weightshare" and out["id"] == "abc"
    (logits,) = out["outputs"]
    assert logits["name"] == "logits" and logits["shape"] == [2, 10]
    p = out["parameters"]
    assert p["subnet"] in stack.profile.names and p["batch_size"] >= 2 and p["queue_ms"] >= 0
    ref = stack.runtime.run(x, p["subnet"])
    np.testing.assert_allclose(np.array(logits["data"]).reshape(2, 10), ref.numpy(),
                               atol=1e-4)


def test_infer_binary_extension(client):
    x = np.random.default_rng(0).standard_normal((1, *SHAPE)).astype("<f4")
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, *SHAPE], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    r = client.post(URL, content=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    assert size == 40 and len(r.content) == n + size


# ----------------------------------------------------------------------- errors
BAD = [
    ("not json", "{oops", "not valid JSON"),
    ("not an object", "[1, 2]", "JSON object"),
    ("no inputs", {}, "'inputs'"),
    ("two inputs", {"inputs": [body()["inputs"][0]] * 2}, "exactly one"),
    ("missing datatype", {"inputs": [{"name": "input", "shape": [1, *SHAPE], "data": []}]},
     "missing 'datatype'"),
    ("wrong datatype", {"inputs": [{**body()["inputs"][0], "datatype": "INT64"}]}, "FP32"),
    ("wrong name", {"inputs": [{**body()["inputs"][0], "name": "x"}]}, "unknown input"),
    ("wrong shape", {"inputs": [{**body()["inputs"][0], "shape": [1, 3, 28, 28]}]},
     "shape must be"),
    ("shape not ints", {"inputs": [{**body()["inputs"][0], "shape": [1, 1, 28.5, 28]}]},
     "shape must be"),
    ("too few values", {"inputs": [{**body()["inputs"][0], "data": [0.0] * 10}]},
     "has 10 values"),
    ("strings", {"inputs": [{**body()["inputs"][0], "data": ["a"] * 784}]}, "only numbers"),
    ("missing data", {"inputs": [{k: v for k, v in body()["inputs"][0].items() if k != "data"}]},
     "missing 'data'"),
    ("batch too large", body(5), "outside 1..4"),
    ("zero batch", {"inputs": [{**body()["inputs"][0], "shape": [0, *SHAPE], "data": []}]},
     "outside 1..4"),
    ("nan", "NAN", "NaN"),
    ("bad slo", body(slo_ms=-3), "slo_ms"),
    ("bad output", {**body(), "outputs": [{"name": "probs"}]}, "unknown output"),
]


@pytest.mark.parametrize(("what", "payload", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_400_with_an_error_and_the_server_keeps_serving(client, what, payload,
                                                                       message):
    if payload == "NAN":
        data = [0.0] * 784
        data[3] = math.nan
        content = json.dumps(body(1, data)).encode()  # json.dumps writes NaN
    elif isinstance(payload, str):
        content = payload.encode()
    else:
        content = json.dumps(payload).encode()
    r = client.post(URL, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, (what, r.text)
    assert message in r.json()["error"]
    assert client.post(URL, json=body(slo_ms=5000)).status_code == 200


def test_unknown_model_route_and_method(client):
    r = client.post("/v2/models/other/infer", json=body())
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    assert client.get("/v2/models/weightshare/versions/7").status_code == 404
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    assert client.get(URL).status_code == 405


def test_deadline_that_cannot_be_met_is_a_504(client):
    r = client.post(URL, json=body(slo_ms=0.001))
    assert r.status_code == 504 and "deadline" in r.json()["error"]


def test_metrics_endpoint(client):
    client.post(URL, json=body(slo_ms=5000))
    text = client.get("/metrics").text
    for name in ("weightshare_requests_total", "weightshare_request_latency_seconds_bucket",
                 "weightshare_slo_total", "weightshare_subnet_batches_total",
                 "weightshare_batch_size_bucket", "weightshare_queue_depth",
                 "weightshare_dropped_total"):
        assert name in text, name
    assert 'outcome="ok"' in text and 'outcome="bad_request"' in text


def test_token_auth(stack):
    with TestClient(make_app(stack, token="s3cret")) as c:
        assert c.get("/v2/health/live").status_code == 200  # probes stay open
        r = c.post(URL, json=body(slo_ms=5000))
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get("/metrics").status_code == 401
        assert c.get("/v2/models/weightshare",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.post(URL, json=body(slo_ms=5000), headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_full_queue_is_a_429_with_retry_after(stack):
    app = make_app(stack, capacity=1)
    worker = app.state.worker  # not started: nothing leaves the queue
    worker.submit(torch.zeros(1, *SHAPE), 10.0, lambda c: None)
    c = TestClient(app)  # no lifespan: the worker stays stopped
    r = c.post(URL, json=body())
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "queue full" in r.json()["error"]


# ------------------------------------------------------------- real HTTP server
class SlowBackend:
    """The runtime, 0.2 s slower per batch: keeps requests in flight during shutdown."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def run(self, batch, name):
        time.sleep(0.2)
        return self.runtime.run(batch, name)

    def prepare(self, name):
        return 0.0


def test_graceful_shutdown_drains_in_flight_requests(stack):
    app = make_app(stack, backend=SlowBackend(stack.runtime), policy="fixed:s0")
    server = ServerThread(app).start()
    results: list[int] = []

    def send() -> None:
        r = httpx.post(server.url + URL, json=body(slo_ms=10_000), timeout=20)
        results.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    # Every request is in (queued, running or answered) before the shutdown starts.
    while app.state.worker.pending() + len(results) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert app.state.worker.pending() >= 2  # several still in flight when stop() is called
    server.stop()
    for t in threads:
        t.join(20)
    assert results == [200] * 4
    assert not app.state.worker.alive


def test_server_thread_socket_is_tcp_so_answers_are_not_delayed(stack):
    server = ServerThread(make_app(stack))
    try:
        # asyncio only sets TCP_NODELAY on connections accepted from an IPPROTO_TCP socket.
        assert server.sock.proto == socket.IPPROTO_TCP and server.sock.getsockname()[0] == \
            "127.0.0.1"
    finally:
        server.sock.close()



def test_a_server_thread_whose_server_dies_before_starting_says_so():
    from weightshare.serve.threads import UvicornThread

    class _Dies:  # a uvicorn server whose run returns before it started (a failed startup)
        started = should_exit = False

        def run(self, sockets):
            assert sockets[0].getsockname()[1] > 0

    class _Probe(UvicornThread):
        what = "the probe server"

        def __init__(self) -> None:
            super().__init__()
            self.fake = _Dies()
            self._serve_with(self.fake, self.fake.run, "weightshare-probe")

    probe = _Probe()
    assert probe.url == f"http://127.0.0.1:{probe.port}"
    with pytest.raises(RuntimeError, match="the probe server did not start"):
        probe.start(timeout=5)
    probe.stop()
    assert probe.fake.should_exit and probe.sock.fileno() == -1

def test_tritonclient_works_unmodified(stack):
    httpclient = pytest.importorskip("tritonclient.http")
    with ServerThread(make_app(stack)) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("weightshare")
            meta = client.get_model_metadata("weightshare")
            assert meta["inputs"][0]["shape"] == [-1, *SHAPE]
            x = np.random.default_rng(1).standard_normal((3, *SHAPE)).astype(np.float32)
            for binary in (True, False):
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
                res = client.infer("weightshare", [inp], outputs=outputs,
                                   parameters={"slo_ms": 5000})
                logits = res.as_numpy("logits")
                params = res.get_response()["parameters"]
                ref = stack.runtime.run(torch.from_numpy(x), params["subnet"]).numpy()
                np.testing.assert_allclose(logits, ref, atol=1e-4)
            res = client.infer("weightshare", [inp])  # default: binary output
            assert res.as_numpy("logits").shape == (3, 10)
            bad = httpclient.InferInput("input", [1, 2, 2, 2], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 2, 2, 2), np.float32))
            with pytest.raises(Exception, match="shape must be"):
                client.infer("weightshare", [bad])
        finally:
            client.close()


def test_loadgen_against_a_live_server(stack):
    with ServerThread(make_app(stack)) as server:
        trace = make_trace("poisson:rate=40,duration=1,seed=0")
        res = run_load_sync(trace, LoadConfig(url=server.url, slo_ms=2000, max_seconds=5))
    s = res.summary
    assert s["requests"] == len(trace) > 10
    assert s["ok"] + s["late"] + s["dropped"] + s["rejected"] + s["errors"] == len(trace)
    assert s["ok"] > 0 and s["mean_acc"] >= 0 and s["p50_ms"] > 0
    assert set(s["subnets"]) <= set(stack.profile.names)
