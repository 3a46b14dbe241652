"""Reading the world: Mistral probes, Prometheus, the provider status feed, network checks, logs."""
