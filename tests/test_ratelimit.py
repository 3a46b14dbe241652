import httpx

from runbook_lib.analysis import ratelimit
from runbook_lib.sim.mistral import MistralSimulator


def _headers(sim, key="k"):
    return dict(httpx.get(f"{sim.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=2).headers)


def test_kinds_of_429_against_the_simulator():
    with MistralSimulator(api_keys=["k"]) as sim:
        normal = ratelimit.Limits.from_headers(_headers(sim))
        assert normal.req_limit_minute == 720 and normal.req_remaining_minute < 720
        assert ratelimit.kind_of_limit(["ok"], normal) == ratelimit.NONE
        sim.set_mode("rate_limited")
        limited = ratelimit.Limits.from_headers(_headers(sim))
        assert ratelimit.kind_of_limit(["rate_limited"], limited) == ratelimit.REQUEST_LIMIT
        sim.set_mode("capacity_exceeded")
        cap = ratelimit.Limits.from_headers(_headers(sim))
        assert cap.req_remaining_minute > 0
        assert ratelimit.kind_of_limit(["capacity_exceeded"], cap) == ratelimit.CAPACITY


def test_token_limit_is_told_apart():
    limits = ratelimit.Limits(720, 500, 100_000, 0, 30)
    assert ratelimit.kind_of_limit(["rate_limited"], limits) == ratelimit.TOKEN_LIMIT


def test_recommendation_shows_littles_law():
    rec = ratelimit.recommend_concurrency(ratelimit.Limits(720, 0, 5_000_000, 0, 10), latency_s=2.0,
                                          tokens_per_request=1000, current_rps=12.0)
    # 720/60*0.8 = 9.6 req/s; tokens: 5e6/60/1000*0.8 = 66.7 req/s; min 9.6 x 2 s = 19.2 -> 19
    assert rec.max_concurrent_requests == 19
    assert any("9.60 req/s" in s for s in rec.arithmetic) and "queue" in (rec.caveat or "")


def test_no_limit_or_latency_gives_no_number_and_says_why():
    assert ratelimit.recommend_concurrency(ratelimit.Limits(0, 0, None, None, None), latency_s=1).caveat
    assert ratelimit.recommend_concurrency(ratelimit.Limits(720, 1, None, None, None), latency_s=None
                                           ).max_concurrent_requests is None


def test_monthly_quota_headers_are_read_and_an_exhausted_month_is_its_own_kind():
    headers = {"x-ratelimit-limit-req-minute": "720", "x-ratelimit-remaining-req-minute": "700",
               "x-ratelimit-limit-tokens-month": "1000000", "x-ratelimit-remaining-tokens-month": "0",
               "x-ratelimit-limit-req-month": "5000", "x-ratelimit-remaining-req-month": "12",
               "x-ratelimit-reset-tokens-month": "86400"}
    limits = ratelimit.Limits.from_headers(headers)
    assert (limits.tokens_limit_month, limits.tokens_remaining_month, limits.req_remaining_month,
            limits.tokens_reset_month_s) == (1_000_000, 0, 12, 86400)
    assert ratelimit.kind_of_limit(["rate_limited"], limits) == ratelimit.MONTHLY_QUOTA
    older = ratelimit.Limits.from_headers({"x-ratelimit-remaining-req-minute": "0"})  # no monthly headers: None
    assert older.tokens_remaining_month is None and not older.monthly_exhausted
    assert ratelimit.kind_of_limit(["rate_limited"], older) == ratelimit.REQUEST_LIMIT
