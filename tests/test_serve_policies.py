"""Serving policies, the request queue, traces and the simulator: pure Python, hand-made
profiles and a hand-moved clock (no torch, no model)."""

from __future__ import annotations

import pytest

from weightshare.serve.batching import QueueFull, RequestQueue
from weightshare.serve.core import Decision, ManualClock, Request
from weightshare.serve.outcomes import Outcome, summarize
from weightshare.serve.policies import FixedAIMD, Infaas, SlackFit, list_policies, make_policy
from weightshare.serve.profile import DeployedSubnet, Profile, batch_sizes_up_to
from weightshare.serve.simulate import SimConfig, simulate
from weightshare.serve.traces import (
    Trace,
    list_traces,
    make_trace,
    read_azure_counts,
    write_azure_sample,
)
from weightshare.space import SubnetConfig

# s0 fast and least accurate ... s2 slow and most accurate; ms at batch 1, 2, 4, 8.
LAT = {"s0": [1.0, 1.5, 2.5, 4.5], "s1": [2.0, 3.0, 5.0, 9.0], "s2": [4.0, 6.0, 10.0, 18.0]}
ACC = {"s0": 70.0, "s1": 75.0, "s2": 80.0}


def make_profile(load_ms: float = 50.0) -> Profile:
    cfg = SubnetConfig((1,), (3,), (3,))
    subnets = tuple(DeployedSubnet(n, cfg, macs=i + 1, params=10, acc=ACC[n])
                    for i, n in enumerate(LAT))
    return Profile(subnets, (1, 2, 4, 8), dict(LAT), dict(LAT),
                   load_ms={n: load_ms for n in LAT}, switch_us=5.0)


def queue_with(slacks_ms: list[float], now: float = 0.0, capacity: int | None = None
               ) -> RequestQueue:
    q = RequestQueue(capacity)
    for i, s in enumerate(slacks_ms):
        q.push(Request(i, now, now + s / 1000.0))
    return q


@pytest.fixture
def profile() -> Profile:
    return make_profile()


# ----------------------------------------------------------------------- queue
def test_queue_is_edf_and_bounded():
    q = queue_with([30, 10, 20], capacity=3)
    assert [r.id for r in q] == [1, 2, 0]
    with pytest.raises(QueueFull):
        q.push(Request(9, 0.0, 1.0))
    q.remove([q[0], q[1]])
    assert [r.id for r in q] == [0] and q.items == 1
    q.remove([q[0]])
    assert len(q) == 0 and q.items == 0


def test_queue_arrival_rate():
    q = RequestQueue()
    for i in range(10):
        q.push(Request(i, i * 0.1, 5.0))
    assert q.arrival_rate(0.95, window_s=1.0) == pytest.approx(10.0)
    assert q.arrival_rate(0.95, window_s=0.5) == pytest.approx(10.0)  # 0.5 .. 0.9


def test_batch_sizes():
    assert batch_sizes_up_to(32) == (1, 2, 4, 8, 16, 32)
    assert batch_sizes_up_to(12) == (1, 2, 4, 8, 12)
    assert batch_sizes_up_to(1) == (1,)


def test_profile_roundtrip_and_lookup(tmp_path, profile):
    p = Profile.load(profile.save(tmp_path / "p.json"))
    assert p.names == ["s0", "s1", "s2"] and p.most_accurate() == "s2"
    assert p.resolve("smallest") == "s0" and p.resolve("largest") == "s2"
    assert p.latency_ms("s1", 3) == 5.0  # read at the next profiled size up
    with pytest.raises(ValueError, match="outside"):
        p.latency_ms("s1", 9)
    with pytest.raises(ValueError, match="no deployed SubNet"):
        p.resolve("s7")


# -------------------------------------------------------------------- registry
def test_registry_builds_every_policy(profile):
    assert {"slackfit", "fixed", "maxacc", "infaas"} <= set(list_policies())
    for name in list_policies():
        policy = make_policy(name)
        d = policy.decide(queue_with([100.0]), 0.0, profile)
        assert isinstance(d, Decision)
    assert make_policy("fixed:s1").model == "s1"
    assert make_policy("slackfit:bucket_ms=0.5").bucket_ms == 0.5
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(ValueError, match="bad options"):
        make_policy("slackfit:wrong=1")


# -------------------------------------------------------------------- SlackFit
@pytest.mark.parametrize(("slack", "expected"), [(100, "s2"), (4.5, "s2"), (3, "s1"),
                                                  (1.2, "s0")])
def test_slackfit_single_request_most_accurate_that_fits(profile, slack, expected):
    d = SlackFit(bucket_ms=0.1).decide(queue_with([slack]), 0.0, profile)
    assert d.subnet == expected and d.batch_size == 1 and not d.dropped


def test_slackfit_shifts_to_smaller_subnet_and_bigger_batch_as_slack_shrinks(profile):
    policy = SlackFit(bucket_ms=0.1)
    picks = {}
    for slack in (100, 10, 5, 4, 2):
        q = queue_with([slack] + [slack + 50] * 7)
        d = policy.decide(q, 0.0, profile)
        picks[slack] = (d.subnet, d.batch_size)
    assert picks[100] == ("s2", 8)
    assert picks[10] == ("s1", 8)
    assert picks[5] == ("s0", 8)
    assert picks[4] == ("s0", 4)  # batch 8 no longer fits: the largest batch that does
    assert picks[2] == ("s0", 2)


def test_slackfit_drops_expired_and_serves_the_rest_in_edf_order(profile):
    q = queue_with([0.5, 60, 30, -5])  # ids 0..3
    d = SlackFit(bucket_ms=0.1).decide(q, 0.0, profile)
    assert sorted(r.id for r in d.dropped) == [0, 3]
    assert [r.id for r in d.requests] == [2, 1]
    assert d.subnet == "s2"  # 30 ms slack fits s2 at batch 2 (6 ms)


def test_slackfit_moving_clock_turns_slack_into_drops(profile):
    clock = ManualClock()
    q = queue_with([10.0])
    policy = SlackFit(bucket_ms=0.1)
    assert policy.decide(q, clock.now(), profile).subnet == "s2"
    clock.advance(0.0075)  # 2.5 ms left
    assert policy.decide(q, clock.now(), profile).subnet == "s1"
    clock.advance(0.002)  # 0.5 ms left: nothing fits
    d = policy.decide(q, clock.now(), profile)
    assert d.subnet is None and [r.id for r in d.dropped] == [0]


def test_slackfit_table_is_built_once_per_profile(profile):
    policy = SlackFit()
    t1 = policy.table_for(profile)
    assert policy.table_for(profile) is t1
    assert t1.bucket_ms == pytest.approx(0.1)  # a tenth of the fastest latency


# ------------------------------------------------------------------------ AIMD
def test_fixed_aimd_grows_and_backs_off(profile):
    policy = FixedAIMD("s1", add=1, backoff=0.5)
    q = queue_with([1000] * 8)
    d = policy.decide(q, 0.0, profile)
    assert d.subnet == "s1" and d.batch_size == 1
    for _ in range(3):
        policy.observe(d, 0.0, 0.001)  # met the deadline
    assert policy.cap == 4
    assert policy.decide(q, 0.0, profile).batch_size == 4
    policy.observe(d, 0.0, 2.0)  # missed
    assert policy.cap == 2
    for _ in range(20):
        policy.observe(d, 0.0, 0.001)
    assert policy.cap == profile.max_batch


def test_fixed_drops_what_its_subnet_cannot_make(profile):
    d = make_policy("fixed:largest").decide(queue_with([3, 100]), 0.0, profile)
    assert [r.id for r in d.dropped] == [0] and d.subnet == "s2"


def test_maxacc_always_most_accurate(profile):
    d = make_policy("maxacc").decide(queue_with([12, 100, 100, 100]), 0.0, profile)
    assert d.subnet == "s2" and d.batch_size == 4  # 10 ms at batch 4 fits 12 ms


# ---------------------------------------------------------------------- INFaaS
def test_infaas_loads_before_serving_and_follows_load(profile):
    policy = Infaas(max_held=1, hold_s=0.0)
    q = queue_with([100.0])
    d = policy.decide(q, 0.0, profile)
    assert d.load == "s2" and not d.requests and d.planned_ms == 50.0
    d = policy.decide(q, 0.0, profile)
    assert d.subnet == "s2" and d.load is None
    # 2000 requests/s: s2 sustains 8 / 18 ms = 444/s, s1 889/s, s0 1778/s -> s0 fastest
    busy = RequestQueue()
    for i in range(2000):
        busy.push(Request(i, i / 2000, 1.0 + 0.1))
    assert policy.decide(busy, 1.0, profile).load == "s0"
    assert list(policy.held) == ["s0"]  # max_held=1 evicted s2


def test_infaas_pays_load_cost_in_simulation(profile):
    trace = make_trace("varying:rates=100/1500/100,segment=1,seed=1")
    cfg = SimConfig(slo_ms=100)
    res = simulate(make_policy("infaas:max_held=1,hold_s=0.2"), profile, trace, cfg)
    assert res.loads >= 2 and res.load_s == pytest.approx(res.loads * 0.05)
    slack = simulate(make_policy("slackfit"), profile, trace, cfg)
    assert slack.loads == 0


# ------------------------------------------------------------------- simulator
def test_simulator_is_deterministic_and_accounts_every_request(profile):
    trace = make_trace("gamma:rate=400,cv2=8,duration=3,seed=2")
    cfg = SimConfig(slo_ms=20, jitter=0.1, seed=3)
    a = simulate(make_policy("slackfit"), profile, trace, cfg)
    b = simulate(make_policy("slackfit"), profile, trace, cfg)
    assert a.outcomes == b.outcomes and a.summary == b.summary
    assert len(a.outcomes) == len(trace) and len({o.id for o in a.outcomes}) == len(trace)


def test_slackfit_beats_fixed_subnets_under_bursts(profile):
    trace = make_trace("gamma:rate=500,cv2=8,duration=4,seed=0")
    cfg = SimConfig(slo_ms=20)
    res = {p: simulate(make_policy(p), profile, trace, cfg).summary
           for p in ("slackfit", "fixed:s2", "fixed:s0", "maxacc")}
    assert res["slackfit"]["slo_attainment"] >= res["fixed:s2"]["slo_attainment"]
    assert res["slackfit"]["slo_attainment"] >= res["maxacc"]["slo_attainment"]
    assert res["slackfit"]["mean_acc"] > res["fixed:s0"]["mean_acc"]


def test_simulator_light_load_serves_everything_with_the_best_subnet(profile):
    trace = make_trace("poisson:rate=20,duration=2")
    r = simulate(make_policy("slackfit"), profile, trace, SimConfig(slo_ms=100)).summary
    assert r["slo_attainment"] == 1.0 and r["mean_acc"] == 80.0


def test_simulator_rejects_beyond_queue_capacity(profile):
    trace = Trace(tuple(0.0 for _ in range(50)), "burst", {"duration": 1.0})
    r = simulate(make_policy("fixed:s2"), profile, trace,
                 SimConfig(slo_ms=1000, queue_capacity=10)).summary
    assert r["rejected"] == 40


def test_summarize_counts():
    outs = [Outcome(0, 0.0, 0.1, "ok", 0.05, "s1", 75.0, 2),
            Outcome(1, 0.0, 0.1, "late", 0.2, "s1", 75.0, 2),
            Outcome(2, 0.0, 0.1, "dropped", 0.0),
            Outcome(3, 0.0, 0.1, "rejected")]
    s = summarize(outs, duration_s=1.0)
    assert s["slo_attainment"] == 0.25 and s["mean_acc"] == 75.0 and s["dropped"] == 1
    assert s["throughput_rps"] == 2.0 and s["effective_acc"] == 75.0 / 4


# ---------------------------------------------------------------------- traces
@pytest.mark.parametrize("cv2", [1, 4, 8])
def test_gamma_trace_burstiness_and_rate(cv2):
    t = make_trace(f"gamma:rate=200,cv2={cv2},duration=50,seed=1")
    assert t.mean_rate == pytest.approx(200, rel=0.1)
    assert t.cv2() == pytest.approx(cv2, rel=0.2)


def test_traces_are_seeded_and_registered():
    assert {"poisson", "gamma", "varying", "azure"} <= set(list_traces())
    assert make_trace("poisson:rate=50,seed=3") == make_trace("poisson:rate=50,seed=3")
    v = make_trace("varying:rates=10/100,segment=10")
    first = sum(1 for a in v.arrivals if a < 10)
    assert first < len(v) - first
    assert len(v.limit(max_requests=5)) == 5
    with pytest.raises(ValueError, match="unknown trace"):
        make_trace("nope")


def test_policy_and_trace_specs_share_their_options_and_errors():
    # both go through serve.spec.make_from_spec: overrides win over the spec, a bare argument
    # fills a policy's positional keyword, and a misfit is a ValueError naming the options
    assert make_trace("poisson:rate=50,duration=1,seed=3", rate=5) == \
        make_trace("poisson:rate=5,duration=1,seed=3")
    assert make_policy("fixed:s1", model="s2").model == "s2"
    with pytest.raises(ValueError, match=r"trace 'poisson': bad options \['rate', 'wrong'\]"):
        make_trace("poisson:rate=5", wrong=1)
    with pytest.raises(ValueError, match=r"policy 'fixed': bad options \['model', 'wrong'\]"):
        make_policy("fixed:s1,wrong=1")
    with pytest.raises(ValueError, match="trace spec 'gamma:4': cannot read '4'"):
        make_trace("gamma:4")


def test_azure_sample_layout_and_replay(tmp_path):
    path = write_azure_sample(tmp_path / "az.csv", n_functions=3, seed=1)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["HashOwner", "HashApp", "HashFunction", "Trigger", "1"]
    assert header[-1] == "1440"
    counts = read_azure_counts(path)
    assert len(counts) == 1440
    t = make_trace(f"azure:path={path},minutes=3,start=10,seconds_per_minute=0.5")
    assert len(t) == sum(counts[10:13]) and t.duration == 1.5
    assert len(make_trace("azure:minutes=2")) > 0  # the shipped sample
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="Azure Functions 2019 layout"):
        read_azure_counts(bad)
