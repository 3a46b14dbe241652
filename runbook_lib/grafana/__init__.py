"""Grafana: the Mistral dashboard (`dashboard`, generated with Grafana's own Foundation SDK) and incident
annotations posted through Grafana's HTTP API (`annotations`). Both optional: nothing else imports them.
"""

EVENTS = ("detection", "mitigation", "resolution")  # the incident moments annotated on the dashboard
DEFAULT_TOKEN_ENV = "GRAFANA_TOKEN"  # NAME of the variable holding the service-account token
