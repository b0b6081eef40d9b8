"""The request-path overhead model (its arithmetic, SlackFit planning with it, the simulator
replaying it), its measurement at startup, and request decoding: the JSON and binary paths
of the Open Inference Protocol give the same tensor, and answers encode back exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest
import torch

from weightshare.serve.core import Request
from weightshare.serve.overhead import (
    MAX_UTILISATION,
    RequestOverhead,
    measure_decode_ms,
    measure_request_overhead,
)
from weightshare.serve.policies import make_policy
from weightshare.serve.profile import DeployedSubnet, Profile
from weightshare.serve.server import BadRequest, encode_infer_response, parse_infer_request
from weightshare.serve.simulate import SimConfig, simulate
from weightshare.serve.traces import Trace
from weightshare.space import SubnetConfig

SHAPE = (1, 28, 28)
OV = RequestOverhead(decode_ms=0.2, http_ms=0.4, handoff_ms=0.2, encode_ms=0.1,
                     batch_ms=0.05, item_ms=0.01)

# s0 fast and less accurate, s1 slower and more accurate; ms at batch 1, 2, 4.
LAT = {"s0": [1.0, 1.6, 2.8], "s1": [3.0, 5.0, 9.0]}


def make_profile() -> Profile:
    cfg = SubnetConfig((1,), (3,), (3,))
    subnets = (DeployedSubnet("s0", cfg, macs=1, params=10, acc=70.0),
               DeployedSubnet("s1", cfg, macs=2, params=10, acc=80.0))
    return Profile(subnets, (1, 2, 4), dict(LAT), dict(LAT))


def queue_with(slacks_ms: list[float], now: float = 0.0):
    from weightshare.serve.batching import RequestQueue

    q = RequestQueue()
    for i, s in enumerate(slacks_ms):
        q.push(Request(i, now, now + s / 1000.0))
    return q


# ---------------------------------------------------------------- arithmetic
def test_overhead_parts_add_up():
    # arrival: half the framing, the decode, half the hand-off; answer: the other halves.
    assert OV.arrival_ms == pytest.approx(0.2 + 0.2 + 0.1)
    assert OV.answer_ms == pytest.approx(0.1 + 0.1 + 0.2)
    assert OV.arrival_ms + OV.answer_ms == pytest.approx(
        OV.decode_ms + OV.http_ms + OV.handoff_ms + OV.encode_ms)
    # a batch of 4: collation once, then 4 images' slicing and 4 answers one after another
    assert OV.static_ms(4) == pytest.approx(0.05 + 4 * (0.01 + 0.4))


def test_arrival_work_stretches_a_batch_on_a_shared_core():
    # 1000 req/s x 0.5 ms of arrival work = half the core: a batch takes twice as long.
    assert OV.utilisation(1000.0) == pytest.approx(0.5)
    assert OV.batch_ms_total(3.0, 2, rate=1000.0) == pytest.approx(
        (3.0 + OV.static_ms(2)) / 0.5)
    assert OV.batch_ms_total(3.0, 2) == pytest.approx(3.0 + OV.static_ms(2))
    # overload is capped (the planner never divides by ~0) ...
    assert OV.utilisation(1e9) == MAX_UTILISATION
    # ... and an event loop on other cores steals nothing
    apart = RequestOverhead(**{**OV.__dict__, "shared_core": False})
    assert apart.utilisation(1000.0) == 0.0
    assert RequestOverhead.from_dict(OV.to_dict()) == OV


@pytest.mark.parametrize("field", ["decode_ms", "http_ms", "batch_ms"])
@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_overhead_rejects_nonsense(field, bad):
    with pytest.raises(ValueError, match=field):
        RequestOverhead(**{field: bad})


# ------------------------------------------------------------------ SlackFit
def test_slackfit_plans_with_the_request_path():
    prof = make_profile()
    # 4 ms of slack: s1 at batch 1 fits on model time (3.0) and with the request path
    # (3.0 + 0.05 + 0.01 + 0.4 = 3.46).
    q = queue_with([4.0])
    plain = make_policy("slackfit").decide(q, 0.0, prof)
    assert plain.subnet == "s1" and plain.planned_ms == pytest.approx(3.0)
    sf = make_policy("slackfit")
    sf.set_overhead(OV)
    d = sf.decide(q, 0.0, prof)
    # one arrival in the last 0.5 s: 2 req/s, a 0.1 % share of the core
    assert d.subnet == "s1" and d.planned_ms == pytest.approx(
        (3.0 + OV.static_ms(1)) / (1 - OV.utilisation(2.0)))
    # 3.3 ms: model time alone still says s1, the whole request path says s0.
    q = queue_with([3.3])
    assert make_policy("slackfit").decide(q, 0.0, prof).subnet == "s1"
    d = sf.decide(q, 0.0, prof)
    assert d.subnet == "s0" and d.planned_ms == pytest.approx(OV.batch_ms_total(1.0, 1, 2.0))
    assert "overhead" in sf.describe()
    sf.set_overhead(None)  # the table is rebuilt without it
    assert sf.decide(q, 0.0, prof).subnet == "s1"


def test_slackfit_leaves_room_for_arrivals_at_high_rate():
    prof = make_profile()
    sf = make_policy("slackfit", rate_window_s=0.5)
    sf.set_overhead(OV)
    # 400 requests in the last 0.5 s = 800 req/s: arrival work takes 40 % of the core, so
    # 5 ms of slack is worth 3 ms of the table's latencies: s1 (3.46 ms) no longer fits.
    from weightshare.serve.batching import RequestQueue

    q = RequestQueue()
    for i in range(400):
        q.push(Request(i, -0.5 + i * 0.00125, 10.0))  # far deadlines: not the head
    head = Request(1000, 0.0, 0.005)
    q.push(head)
    q.remove([r for r in q if r is not head])  # keep only the head, the meter remembers
    assert q.arrival_rate(0.0, 0.5) == pytest.approx(800)
    d = sf.decide(q, 0.0, prof)
    assert d.subnet == "s0"
    rate = q.arrival_rate(0.0, 0.5)
    assert d.planned_ms == pytest.approx((1.0 + OV.static_ms(1)) / (1 - OV.utilisation(rate)))
    quiet = make_policy("slackfit")
    quiet.set_overhead(OV)
    assert quiet.decide(queue_with([5.0]), 0.0, prof).subnet == "s1"


# ----------------------------------------------------------------- simulator
def test_simulator_replays_the_request_path():
    prof = make_profile()
    ov = RequestOverhead(decode_ms=0.5, batch_ms=0.1, encode_ms=0.2, item_ms=0.0)
    trace = Trace((0.0,), "one", {"duration": 0.1})
    r = simulate(make_policy("fixed:s0"), prof, trace, SimConfig(slo_ms=100, overhead=ov))
    (o,) = r.outcomes
    # queued after its decode, then the model (median 1.0), the batch cost and its answer
    assert o.finish == pytest.approx((0.5 + 1.0 + 0.1 + 0.2) / 1000)
    plain = simulate(make_policy("fixed:s0"), prof, trace, SimConfig(slo_ms=100))
    assert plain.outcomes[0].finish == pytest.approx(1.0 / 1000)


def test_simulator_stretches_a_batch_by_the_arrivals_it_overlaps():
    prof = make_profile()
    ov = RequestOverhead(decode_ms=0.5)
    # request 0 runs (1 ms model) from 0.5 ms; requests at 0.7 and 0.9 ms arrive meanwhile,
    # each costing 0.5 ms of the core: request 0 finishes at 0.5 + 1.0 + 2 x 0.5 = 2.5 ms.
    trace = Trace((0.0, 0.0007, 0.0009), "three", {"duration": 0.1})
    r = simulate(make_policy("fixed:s0"), prof, trace, SimConfig(slo_ms=100, overhead=ov))
    assert r.outcomes[0].finish == pytest.approx(0.0025)
    apart = RequestOverhead(decode_ms=0.5, shared_core=False)
    r = simulate(make_policy("fixed:s0"), prof, trace, SimConfig(slo_ms=100, overhead=apart))
    assert r.outcomes[0].finish == pytest.approx(0.0015)


def test_answers_of_a_batch_finish_one_after_another():
    prof = make_profile()
    ov = RequestOverhead(encode_ms=0.3)
    trace = Trace((0.0, 0.0, 0.0, 0.0), "burst", {"duration": 0.1})
    r = simulate(make_policy("slackfit"), prof, trace, SimConfig(slo_ms=100, overhead=ov))
    finishes = sorted(o.finish for o in r.outcomes)
    assert all(o.batch == 4 for o in r.outcomes)
    gaps = np.diff(finishes)
    assert np.allclose(gaps, 0.0003)


# --------------------------------------------------------------- measurement
def test_measured_overhead_is_positive_and_decode_is_fast():
    ov = measure_request_overhead(SHAPE, 10, max_batch=8, runs=30)
    for k in ("decode_ms", "encode_ms", "handoff_ms"):
        assert 0 < getattr(ov, k) < 100, (k, ov)
    assert ov.encoding == "json" and ov.arrival_ms > ov.decode_ms
    binary = measure_request_overhead(SHAPE, 10, max_batch=8, runs=30, encoding="binary")
    assert binary.encoding == "binary"
    d = measure_decode_ms(SHAPE, runs=30)
    assert set(d) == {"json", "orjson", "binary"} and all(v > 0 for v in d.values())
    with pytest.raises(ValueError, match="encoding"):
        measure_request_overhead(SHAPE, 10, encoding="xml")


def test_a_failing_probe_says_so_and_stops_its_worker():
    import threading

    from weightshare.serve.overhead import _asgi_infer_ms

    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="overhead probe answered 400"):
        _asgi_infer_ms(SHAPE, 10, b"not json", None, runs=3)
    assert not [t for t in set(threading.enumerate()) - before if t.name == "weightshare-infer"]


# ------------------------------------------------------------------ decoding
def _bodies(x: np.ndarray) -> dict[str, tuple[bytes, str | None]]:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]})
    return {
        "json": (json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode(),
                 None),
        "orjson": (orjson.dumps({"inputs": [{**tensor, "data": x.ravel()}]},
                                option=orjson.OPT_SERIALIZE_NUMPY), None),
        "binary": (header + x.astype("<f4").tobytes(), str(len(header))),
    }


@pytest.mark.parametrize("batch", [1, 3])
def test_json_and_binary_requests_decode_to_the_same_tensor(batch):
    x = np.random.default_rng(batch).standard_normal((batch, *SHAPE)).astype(np.float32)
    got = {k: parse_infer_request(b, h, SHAPE, 4)[1] for k, (b, h) in _bodies(x).items()}
    for k, t in got.items():
        assert t.dtype == torch.float32 and tuple(t.shape) == x.shape, k
        assert torch.equal(t, torch.from_numpy(x)), k  # bit-exact: floats round-trip


def test_integer_json_data_is_read_as_float():
    x = np.arange(784, dtype=np.int64).reshape(1, *SHAPE)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, *SHAPE], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    _, t = parse_infer_request(body, None, SHAPE, 1)
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(x).float())


@pytest.mark.parametrize(("data", "message"), [
    (["1.5"] * 784, "only numbers"),
    ([True] * 784, "booleans"),
    ([[1.0, 2.0], [3.0]] + [0.0] * 782, "only numbers"),
    ([None] * 784, "only numbers"),
])
def test_json_data_that_is_not_numbers_is_refused(data, message):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, *SHAPE], "datatype": "FP32",
                                   "data": data}]}).encode()
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body, None, SHAPE, 1)


@pytest.mark.parametrize("binary", [False, True])
def test_answers_encode_the_logits_exactly(binary):
    logits = torch.randn(3, 10)
    body, headers = encode_infer_response(logits, "m", binary, {"subnet": "s0"}, "req-7")
    if binary:
        n = int(headers["Inference-Header-Content-Length"])
        meta, raw = orjson.loads(body[:n]), body[n:]
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == len(raw) == 3 * 10 * 4
        got = np.frombuffer(raw, dtype="<f4").reshape(3, 10)
    else:
        meta = json.loads(body)  # what a client's standard parser reads
        got = np.asarray(meta["outputs"][0]["data"], dtype=np.float32).reshape(3, 10)
    assert meta["id"] == "req-7" and meta["parameters"] == {"subnet": "s0"}
    assert meta["outputs"][0]["shape"] == [3, 10]
    assert np.array_equal(got, logits.numpy())


def test_a_negative_switch_time_from_a_noisy_profile_costs_nothing():
    from dataclasses import replace

    prof = replace(make_profile(), switch_us=-1500.0)  # what a noisy machine can measure
    trace = Trace(tuple(i * 0.0005 for i in range(200)), "busy", {"duration": 0.1})
    r = simulate(make_policy("slackfit"), prof, trace, SimConfig(slo_ms=5))
    assert len({o.subnet for o in r.outcomes if o.subnet}) == 2  # it did switch
    assert all(o.finish is None or o.finish >= o.arrival for o in r.outcomes)
