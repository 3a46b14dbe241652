"""Secret managers for the 401 key rotation, beside the Kubernetes Secret (`kube.rotation`).

One flow for every store (`base.rotate_key`): the new key, read from the environment variable *named*
by `new_key_env`, is tested against the Mistral API first; the store's current version is read (only
its fingerprint is kept); a dry run checks the credentials may write (the stores have no server-side
dry run, so their permission APIs are asked); only with `apply_changes` is the new version written,
then read back and compared by fingerprint. The change is recorded like the Kubernetes changes:
what, when, who (and who the store says the credentials are), before and after as fingerprints and
versions, and the undo command that restores the old version. No key is ever a parameter, a record
field or a log line.

One module per provider, each importing its client library only when used (all optional):
`vault` (HashiCorp Vault KV v2, `hvac`), `gcp` (GCP Secret Manager, `google-cloud-secret-manager`),
`aws` (AWS Secrets Manager, `boto3`; the environment pins kubernetes<37 so python-dateutil 2.9 serves
both it and botocore: README, "Secret managers"). `spec.PROVIDERS` is the registry.
"""

PROVIDERS = ("vault", "gcp", "aws")
