import pytest

from runbook_lib.analysis import decision, severity
from runbook_lib.sources import probes


def api(verdict="ok", error_fraction=0.0, samples=5, dominant=None, slow=False, median=100.0):
    return {"verdict": verdict, "error_fraction": error_fraction, "samples": samples,
            "dominant_error": dominant or (verdict if verdict not in ("ok", "partial") else None),
            "slow": slow, "latency_ms_median": median, "latency_threshold_ms": 2000.0}


def svc(status="ok", error_rate=0.0, last_status="200", last_error=None):
    return {"status": status, "mistral": {"status": status, "error_rate": error_rate,
                                          "last_status": last_status, "last_error": last_error}}


@pytest.mark.parametrize("verdict", [probes.AUTH_FAILURE, probes.SERVER_ERROR, probes.TIMEOUT,
                                     probes.CONNECTION_REFUSED, probes.DNS_FAILURE])
def test_everything_failing_is_p1(verdict):
    s = severity.classify(api(verdict, 1.0))
    assert s.level == "P1" and "complete outage" in s.reason and s.response_target == "< 15 min"


@pytest.mark.parametrize("verdict", [probes.RATE_LIMITED, probes.CAPACITY_EXCEEDED])
def test_all_429_is_p2_as_the_seed_says(verdict):
    assert severity.classify(api(verdict, 1.0)).level == "P2"


def test_partial_failures_split_p2_and_p3():
    assert severity.classify(api("partial", 0.6, dominant=probes.RATE_LIMITED)).level == "P2"
    assert severity.classify(api("partial", 0.2, dominant=probes.SERVER_ERROR)).level == "P3"


def test_high_latency_is_p2():
    s = severity.classify(api(slow=True, median=3500.0))
    assert s.level == "P2" and "3500 ms" in s.reason


def test_service_view_raises_severity_when_api_looks_fine():
    assert severity.classify(api(), svc("down", 1.0, "401", "401 Unauthorized")).level == "P1"
    assert severity.classify(api(), svc("degraded", 0.1)).level == "P3"
    assert severity.classify(api(), {"status": "unreachable", "mistral": None}).level == "P2"


def test_metrics_are_used_when_present():
    assert severity.classify(api(), None, {"error_ratio": 0.7}).level == "P2"
    m = {"error_ratio": 0.0, "p95_latency_s": 4.0, "latency_threshold_s": 2.0}
    assert severity.classify(api(), None, m).level == "P2"


def test_no_impact_is_p4_and_names_monitoring_gaps():
    assert severity.classify(api(), svc()).level == "P4"
    s = severity.classify(api(), svc(), None, ["metrics (Prometheus unavailable)"])
    assert s.level == "P4" and "monitoring gaps" in s.reason


@pytest.mark.parametrize("verdict,branch,notebook", [
    (probes.AUTH_FAILURE, decision.AUTH, "diagnose_auth"),
    (probes.FORBIDDEN, decision.AUTH, "diagnose_auth"),
    (probes.RATE_LIMITED, decision.RATE_LIMIT, "diagnose_rate_limit"),
    (probes.CAPACITY_EXCEEDED, decision.RATE_LIMIT, "diagnose_rate_limit"),
    (probes.SERVER_ERROR, decision.PROVIDER, "diagnose_server_error"),
    (probes.TIMEOUT, decision.NETWORK, "diagnose_network"),
    (probes.CONNECTION_REFUSED, decision.NETWORK, "diagnose_network"),
    (probes.DNS_FAILURE, decision.NETWORK, "diagnose_network"),
    (probes.CLIENT_ERROR, decision.OUR_SERVICE, None),
])
def test_decision_tree_branches(verdict, branch, notebook):
    d = decision.decide(api(verdict, 1.0))
    assert (d.branch, d.notebook) == (branch, notebook)


def test_partial_uses_dominant_error():
    d = decision.decide(api("partial", 0.4, dominant=probes.SERVER_ERROR))
    assert d.branch == decision.PROVIDER and "40%" in d.reason


def test_api_ok_but_service_fails_uses_services_code():
    assert decision.decide(api(), svc("down", 1.0, "401")).branch == decision.AUTH
    assert decision.decide(api(), svc("degraded", 0.3, "429")).branch == decision.RATE_LIMIT
    assert decision.decide(api(), svc("degraded", 0.3, "400")).branch == decision.OUR_SERVICE


def test_an_intermittent_fault_the_probes_missed_goes_by_the_failing_calls_code_not_the_last_call():
    """Half our calls 503 while the five probes happened to pass: the last call is as likely a 200."""
    flaky = svc("degraded", 0.5, "200", "server_error")
    # the metrics' breakdown wins over a single call
    d = decision.decide(api(), flaky, {"error_ratio": 0.5, "errors_per_code": {"503": 0.8, "429": 0.3}})
    assert d.branch == decision.PROVIDER and "503" in d.reason and "73% of our failing calls, our metrics" in d.reason
    assert "configuration" not in d.reason  # nothing says the service's configuration differs
    d = decision.decide(api(), flaky, {"error_ratio": 0.5, "estimate": True, "errors_per_code": {"429": 0.5}})
    assert d.branch == decision.RATE_LIMIT and "estimated from the pods' logs" in d.reason
    # no metrics: the health's last failed call
    flaky["mistral"]["last_error_status"] = "503"
    assert decision.decide(api(), flaky).branch == decision.PROVIDER
    # a code that points to nothing upstream stays ours; an auth code still names the key
    assert decision.decide(api(), flaky, {"error_ratio": 0.5, "errors_per_code": {"400": 1.0}}).branch \
        == decision.OUR_SERVICE
    d = decision.decide(api(), svc("down", 1.0, "401"))
    assert d.branch == decision.AUTH and "key" in d.reason


def test_slow_goes_to_network_and_clean_is_resolved():
    assert decision.decide(api(slow=True, median=5000)).branch == decision.NETWORK
    d = decision.decide(api(), svc())
    assert d.branch == decision.RESOLVED and d.notebook is None


def test_severity_follows_what_users_get_not_the_cause():
    # every call of our service refused with 429 is a complete outage for our users: P1, whatever the cause
    s = severity.classify(api(probes.RATE_LIMITED, 1.0), svc("down", 1.0, "429", "429 rate limited"),
                          {"error_ratio": 1.0})
    assert s.level == "P1" and "100% of our calls" in s.reason and "429" in s.reason
    assert severity.classify(api(), svc("down", 1.0, "429")).level == "P1"
    assert severity.classify(api(), svc("down", 1.0, "503")).level == "P1"
    # rate limiting seen by the probes only (no service view, no metrics) stays P2, as the seed files it
    only = severity.classify(api(probes.RATE_LIMITED, 1.0))
    assert only.level == "P2" and "probes only" in only.reason


def test_failing_probes_with_healthy_calls_are_not_an_outage():
    # `slow`: the probe's bound is shorter than the service's own timeout; our calls succeed, slowly
    healthy_but_slow = {"status": "ok", "mistral": {"status": "ok", "error_rate": 0.0, "requests": 20,
                                                   "p95_latency_ms": 3100.0, "last_status": "200"}}
    s = severity.classify(api(probes.TIMEOUT, 1.0), healthy_but_slow)
    assert s.level == "P2" and "high latency" in s.reason and "3.10 s" in s.reason
    fast = {"status": "ok", "mistral": {**healthy_but_slow["mistral"], "p95_latency_ms": 120.0}}
    # the probes' own key is refused while our service's calls succeed: not an outage for users
    s = severity.classify(api(probes.AUTH_FAILURE, 1.0), fast)
    assert s.level == "P3" and "our calls succeed" in s.reason
    # every probe hangs while our service's last *completed* calls look fine: its view lags, calls hang
    s = severity.classify(api(probes.TIMEOUT, 1.0), fast)
    assert s.level == "P1" and "calls hang" in s.reason


def test_measured_impact_levels():
    outage = {"found": True, "bad_requests": 100, "failed_requests": 100, "requests": 100, "duration_s": 20}
    assert severity.from_impact(outage)[0] == "P1"
    slow = {**outage, "failed_requests": 0}          # every call answered, slowly: high latency, P2
    assert severity.from_impact(slow)[0] == "P2"
    minor = {**outage, "bad_requests": 10, "failed_requests": 10}
    assert severity.from_impact(minor)[0] == "P3" and severity.from_impact({"found": False}) is None


def test_the_postmortem_raises_to_the_measurement_and_lowers_only_when_no_call_failed():
    outage = {"found": True, "bad_requests": 140, "failed_requests": 140, "requests": 150, "duration_s": 15}
    # a total outage measured with the episode's edges (93% failed): declared P1 stands, not "degraded"
    assert severity.reassess("P1", outage) is None
    # declared P3 by a triage that saw little: raised
    assert severity.reassess("P3", outage)[0] == "P2"
    # declared P1 ("calls hang") but every call was answered, slowly: lowered to high latency, saying why
    slow = {"found": True, "bad_requests": 20, "failed_requests": 0, "requests": 20, "duration_s": 16}
    level, why = severity.reassess("P1", slow)
    assert level == "P2" and why.startswith("re-assessed from the whole episode (declared P1)") and "0 failed" in why
    # too few calls to refute anything, or nothing measured: the declared level stands
    assert severity.reassess("P1", {**slow, "bad_requests": 5, "requests": 5}) is None
    assert severity.reassess("P1", {"found": False}) is None
    # a hang: nothing answered in time and some calls timed out is an outage even if not all "failed"
    hang = {"found": True, "bad_requests": 12, "failed_requests": 8, "requests": 12, "duration_s": 16}
    assert severity.reassess("P2", hang)[0] == "P1"
    # the episode's edges hold good calls (calls counted when they end: some time out after the fault ended,
    # beside calls answered by then): still a hang when no call was answered in time for most of it
    edged = {**hang, "requests": 22, "duration_s": 16.0, "step_s": 1.0, "unanswered_s": 13.0}
    level, why = severity.from_impact(edged)
    assert level == "P1" and "for 13 s of the episode" in why
    assert severity.from_impact({**edged, "unanswered_s": 9.0})[0] == "P2"  # answers in the middle: degraded
    assert severity.from_impact({**edged, "failed_requests": 0})[0] == "P2"  # slow but answered: never an outage
    assert severity.from_impact({**edged, "duration_s": 2.0, "unanswered_s": 2.0})[0] == "P2"  # too short to tell


def test_worse_orders_levels():
    assert severity.worse("P2", "P1") == "P1" and severity.worse(None, "P3") == "P3" and severity.worse(None, None) is None
