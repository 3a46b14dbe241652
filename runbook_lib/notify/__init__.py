"""Outbound notifications: PagerDuty (Events API v2), Slack (webhook and Web API), a status page (Statuspage).

One module per service over a small common interface (`notify.base`): each builds the exact
request an incident update needs, shows it with its credential redacted (a dry run), and sends it
only when approved; every request, dry run or sent, becomes a `Delivery` that the caller logs in the
incident's `communications`. Credentials come from environment variables named in the module (never
parameters, never in records). `runbooks/comms.py` builds the texts; `notify.base.dispatch` sends them to `notify.providers.configured()`;
`notify.doctor` says what is configured and reachable. All of it is optional: with nothing
configured every function returns "not configured" and the core runs as before.
"""
