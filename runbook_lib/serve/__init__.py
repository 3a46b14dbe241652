"""Alert-driven runs: Alertmanager webhooks in, one respond per incident out."""
