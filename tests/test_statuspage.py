from runbook_lib.sources import statuspage
from runbook_lib.sim.mistral import MistralSimulator


def test_feed_reflects_simulated_provider_incident_and_its_resolution():
    with MistralSimulator() as sim:
        calm = statuspage.fetch(f"{sim.url}/feed.rss", timeout_s=2)
        assert calm.readable and calm.ongoing == [] and calm.latest
        sim.set_mode("server_error", status=503)
        bad = statuspage.fetch(f"{sim.url}/feed.rss", timeout_s=2)
        assert len(bad.ongoing) == 1 and bad.ongoing[0].status.lower() != "resolved"
        assert "Chat API" in " ".join(bad.ongoing[0].affected + [bad.ongoing[0].title])
        sim.set_mode("ok")
        again = statuspage.fetch(f"{sim.url}/feed.rss", timeout_s=2)
        assert again.ongoing == []


def test_unreadable_feed_is_unknown_not_all_clear():
    status = statuspage.fetch("http://127.0.0.1:9/feed.rss", timeout_s=1)
    assert not status.readable and "unknown" in status.summary


def test_parse_feed_sample_from_facts():
    xml = """<rss version="2.0"><channel><title>Mistral AI Status Page</title>
 <item><title><![CDATA[Audio API Degraded]]></title>
  <link>https://status.mistral.ai/incident/4c854daa</link>
  <pubDate>Sun, 26 Jul 2026 02:47:40 GMT</pubDate>
  <description><![CDATA[Status: Resolved<br/>The incident has been resolved<br/><br/>Affected services<ul><li>Audio API</li></ul>]]></description>
 </item>
 <item><title><![CDATA[Audio API Degraded]]></title>
  <link>https://status.mistral.ai/incident/4c854daa</link>
  <pubDate>Sun, 26 Jul 2026 01:47:40 GMT</pubDate>
  <description><![CDATA[Status: Investigating<br/>Looking into it<br/><br/>Affected services<ul><li>Audio API</li></ul>]]></description>
 </item></channel></rss>"""
    updates = statuspage.parse_feed(xml)
    assert [u.status for u in updates] == ["Resolved", "Investigating"]
    assert updates[0].affected == ["Audio API"] and updates[0].published.startswith("2026-07-26T02:47:40")
    assert statuspage.ongoing_incidents(updates) == []


def test_feed_defaults_to_the_providers_unless_the_api_is_the_local_simulator():
    real = ("https://api.mistral.ai", "https://api.eu.mistral.ai", "http://mistral-proxy.internal:8080",
            "http://10.0.0.7:8080")
    for url in real:
        assert statuspage.feed_for(url)[0] == "https://status.mistral.ai/feed.rss", url
    for url in ("http://127.0.0.1:18080", "http://127.0.0.2:1/", "http://[::1]:18080", "http://localhost:18080"):
        feed, why = statuspage.feed_for(url)
        assert feed == url.rstrip("/") + "/feed.rss" and "loopback" in why, url


def test_the_5xx_runbook_derives_the_feed_from_mistral_url_when_none_is_given(monkeypatch, tmp_path):
    """`status_feed_url` empty (the notebook's default, what `respond` passes on): derived, and said how."""
    from runbook_lib import record
    from runbook_lib.runbooks import diagnose_server_error

    monkeypatch.setenv("MISTRAL_API_KEY", "sim-feed-test-key")
    monkeypatch.chdir(tmp_path)
    common = dict(api_key_env="MISTRAL_API_KEY", service_health_url="", kubeconfig="", kube_context="",
                  namespace="default", deployment="x", container="app", timeout_s=1.0, apply_changes=False,
                  operator="", incident_id="feed", incident_commander="", slack_webhook_env="SLACK_WEBHOOK_URL",
                  monitor_interval_s=1.0, monitor_max_s=1.0, healthy_needed=1, probe_samples=1)
    record.LOCAL.clear()
    real = diagnose_server_error.start(mistral_url="https://api.mistral.ai", status_feed_url="", **common)
    assert real.cfg["status_feed_url"] == statuspage.DEFAULT_FEED
    with MistralSimulator() as sim:
        local = diagnose_server_error.start(mistral_url=sim.url, status_feed_url="", **common)
        assert local.cfg["status_feed_url"] == f"{sim.url}/feed.rss"
        sim.set_mode("server_error", status=503)
        seen = local.provider_status()
        assert seen["readable"] and seen["state"] == "incident" and seen["feed_url"] == f"{sim.url}/feed.rss"
    given = diagnose_server_error.start(mistral_url="https://api.mistral.ai",
                                        status_feed_url="http://127.0.0.1:9/feed.rss", **common)
    assert given.cfg["status_feed_url"] == "http://127.0.0.1:9/feed.rss"
    record.LOCAL.clear()
