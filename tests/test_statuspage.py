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
