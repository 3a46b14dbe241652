"""Turning observations into findings: severity, decision, rate limits, impact, timeline, plots."""
