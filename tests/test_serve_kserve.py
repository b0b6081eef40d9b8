"""The KServe predictor in-process: KServe's own REST server on 127.0.0.1, real V2 requests
(httpx and an unmodified tritonclient), bad input, and the InferenceService YAML checked
field by field against KServe's and Kubernetes' API models."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from test_serve_fixtures import tiny_checkpoint, tiny_config

kserve = pytest.importorskip("kserve")

from weightshare.serve.kserve_predictor import KServeThread, WeightsharePredictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = [1, 28, 28]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("kserve"))
    model = WeightsharePredictor("weightshare", tiny_config(ckpt), slo_ms=5000)
    model.load()
    with KServeThread([model]) as srv:
        yield srv, model


def test_binds_loopback_and_reports_health_and_metadata(server):
    srv, _ = server
    assert srv.sock.getsockname()[0] == "127.0.0.1"
    assert httpx.get(srv.url + "/v2/health/live").status_code == 200
    assert httpx.get(srv.url + "/v2/health/ready").status_code == 200
    assert httpx.get(srv.url + "/v2/models/weightshare/ready").status_code == 200
    meta = httpx.get(srv.url + "/v2/models/weightshare").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPE]}]
    assert meta["outputs"][0]["name"] == "logits"


def test_v2_json_request_is_served_by_the_runtime(server):
    srv, model = server
    x = torch.randn(2, *SHAPE)
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [2, *SHAPE], "datatype": "FP32",
                                    "data": x.flatten().tolist()}],
            "parameters": {"slo_ms": 5000}}
    r = httpx.post(srv.url + "/v2/models/weightshare/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == "weightshare"
    params = out["parameters"]
    assert params["subnet"] in model.stack.profile.names and params["batch_size"] >= 2
    (logits,) = out["outputs"]
    assert logits["name"] == "logits" and logits["shape"] == [2, 10]
    ref = model.stack.runtime.run(x, params["subnet"]).numpy()
    np.testing.assert_allclose(np.array(logits["data"]).reshape(2, 10), ref, atol=1e-4)


@pytest.mark.parametrize(("what", "inp", "message"), [
    ("wrong name", {"name": "x"}, "unknown input"),
    ("wrong shape", {"shape": [1, 3, 28, 28], "data": [0.0] * 3 * 784}, "shape must be"),
    ("batch too large", {"shape": [5, *SHAPE], "data": [0.0] * 5 * 784}, "N <= 4"),
])
def test_bad_input_is_a_400(server, what, inp, message):
    srv, _ = server
    tensor = {"name": "input", "shape": [1, *SHAPE], "datatype": "FP32", "data": [0.0] * 784,
              **inp}
    r = httpx.post(srv.url + "/v2/models/weightshare/infer", json={"inputs": [tensor]},
                   timeout=30)
    assert r.status_code == 400, (what, r.text)
    assert message in r.json()["error"]


def test_tritonclient_against_the_predictor(server):
    httpclient = pytest.importorskip("tritonclient.http")
    srv, model = server
    client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
    try:
        assert client.is_server_live() and client.is_model_ready("weightshare")
        x = np.random.default_rng(2).standard_normal((3, *SHAPE)).astype(np.float32)
        for binary in (False, True):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
            # KServe decodes a body without a JSON content type as the binary extension
            # (and then wants its header): tritonclient sends none for an all-JSON request.
            headers = None if binary else {"Content-Type": "application/json"}
            res = client.infer("weightshare", [inp], outputs=out, parameters={"slo_ms": 5000},
                               headers=headers)
            subnet = res.get_response()["parameters"]["subnet"]
            ref = model.stack.runtime.run(torch.from_numpy(x), subnet).numpy()
            np.testing.assert_allclose(res.as_numpy("logits"), ref, atol=1e-4)
    finally:
        client.close()


# --------------------------------------------------------------- the YAML
def _model_class(type_name: str):
    import kserve.models as ks
    import kubernetes.client.models as k8s

    return getattr(ks, type_name, None) or getattr(k8s, type_name, None)


def _check(value, type_name: str, path: str) -> None:
    """Every key of `value` must be a field of the API model `type_name` (by its JSON name),
    recursively, with the value of the type the model declares."""
    if m := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        assert isinstance(value, list), f"{path}: expected a list"
        for i, v in enumerate(value):
            _check(v, m.group(1), f"{path}[{i}]")
        return
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        assert isinstance(value, dict), f"{path}: expected a mapping"
        for k, v in value.items():
            _check(v, m.group(1) or m.group(2), f"{path}.{k}")
        return
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in scalars:
        assert isinstance(value, scalars[type_name]) and not (
            type_name == "int" and isinstance(value, bool)), f"{path}: expected {type_name}"
        return
    if type_name == "object":
        return
    cls = _model_class(type_name)
    assert cls is not None, f"{path}: unknown API type {type_name}"
    if not hasattr(cls, "attribute_map"):  # e.g. Kubernetes' Quantity / IntOrString
        return
    assert isinstance(value, dict), f"{path}: expected a {type_name} mapping"
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, v in value.items():
        assert key in by_json, f"{path}: {key!r} is not a field of {type_name}"
        _check(v, cls.openapi_types[by_json[key]], f"{path}.{key}")


def test_inferenceservice_yaml_uses_real_fields():
    doc = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    _check(doc, "V1beta1InferenceService", "InferenceService")
    pred = doc["spec"]["predictor"]
    assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
    assert pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] >= 1
    (container,) = pred["containers"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    port = container["ports"][0]["containerPort"]
    assert int(args["http_port"]) == port == container["readinessProbe"]["httpGet"]["port"]
    assert container["readinessProbe"]["httpGet"]["path"] == \
        f"/v2/models/{args['model_name']}/ready"
    # The arguments the container passes are ones the predictor's command line accepts.
    from weightshare.serve.kserve_predictor import build_parser

    build_parser().parse_args(container["args"])


def test_dockerfile_serves_the_predictor_module():
    text = (ROOT / "deploy" / "kserve" / "Dockerfile").read_text()
    assert "weightshare.serve.kserve_predictor" in text and "[kserve]" in text
    assert "EXPOSE 8080" in text
