"""The 401 runbook's steps (notebooks/diagnose_auth.ipynb), one public method per cell.

Seed, 401 Unauthorized: 1 verify the key is set (length and a 10-character prefix); 2 test it with
`curl`; 3 check in the Mistral console whether it was rotated; 4 put a new key in the Secret
(`kubectl create secret ... | kubectl apply -f -`); 5 `kubectl rollout restart`. Here the key is shown
only as presence, length and a SHA-256 fingerprint (never a prefix), the deployment says which
Secret key the pods read, the Secret's key is compared with the tested one by fingerprint (so it
is known whether the Secret, the pods or the key itself is at fault), a new key is tested before
it is rotated in, and the rotation and restart are dry runs unless `apply_changes` is True.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import display, params, record
from ..sources import probes
from . import steps
from .._async import run_sync
from ..kube import scrub
from ..secrets import SecretRef, fingerprint, read_secret, refuses_secret_parameters

CONSOLE = "https://console.mistral.ai/api-keys"
TEST_SAMPLES = 3
TEST_INTERVAL_S = 0.2
SYNC_WAIT_S = 60.0  # after a secret-manager rotation: how long the Secret's controller may take to sync
SYNC_POLL_S = 1.0

# outcomes of step 4
RESTART, SECRET_STALE, KEY_REJECTED, OTHER_KEY, NOT_COMPARED, NO_KEY, INCONCLUSIVE = (
    "pods_run_old_key", "secret_stale", "key_rejected", "tested_key_not_the_services", "not_compared",
    "no_key_to_test", "inconclusive")
WORKS, FAILS = "works", "fails"

ADVICE = {
    RESTART: "The tested key works and the Secret holds it: the pods may still run an older key (they read it "
             "when they start). **Rollout restart** the deployment.",
    SECRET_STALE: "The tested key works but the Secret holds another key: the **Secret is stale**. Rotate the "
                  "Secret to the working key (set `new_key_env` to the variable holding it), then restart.",
    KEY_REJECTED: "The key the service uses is **rejected**: revoked, expired, or not active yet (a new key can "
                  f"take a few minutes). Create a new key at {CONSOLE}, put it in the variable named by "
                  "`new_key_env`, re-run with `apply_changes=True` to rotate the Secret and restart.",
    OTHER_KEY: "The tested key is rejected, but it is **not the key in the Secret**: this test says nothing about "
               "the service's key. Export the key from your secret manager (the one whose fingerprint matches "
               "the Secret's) into `api_key_env` and run again before changing anything.",
    NOT_COMPARED: "The Secret's key could not be read (see the finding), so it is not known whether the service "
                  "uses the tested key. Ask for `get` on the Secret, or compare fingerprints with someone who can.",
    NO_KEY: "No key to test: set the variable named by `api_key_env` (the key the service should use).",
    INCONCLUSIVE: "The direct test got no 200/401/403 answer (network, rate limit or server error): the key's "
                  "validity is not known. Run the triage notebook for that failure first.",
}
CODESTRAL = ("A **Codestral** key (from the Codestral section of the console) only works on "
             "`codestral.mistral.ai`; on `api.mistral.ai` it gets 401 too. Make sure the key is an API key of "
             "the workspace the service should bill.")


@refuses_secret_parameters  # the notebook's first call: no secret value as a parameter
def start(*, new_key_env: str, secret_name: str, secret_key: str, key_env_in_deployment: str,
          secret_store: str = "", secret_store_token_env: str = "VAULT_TOKEN", **common: Any) -> AuthRunbook:
    """Validate every parameter first; a wrong one names itself and what is accepted."""
    from ..secretstores import spec as store_spec

    cfg = steps.common_parameters(**common)  # the parameters every diagnosis notebook shares
    cfg.update(new_key_env=params.env_var_name("new_key_env", new_key_env) if new_key_env != "" else "",
               secret_name=params.namespace("secret_name", secret_name),
               secret_key=params.text("secret_key", secret_key, maximum=253, allow_empty=False),
               key_env_in_deployment=params.env_var_name("key_env_in_deployment", key_env_in_deployment),
               # issue 18: where the key is rotated ("" = the Secret itself; else a secret manager syncing it)
               secret_store=secret_store, secret_store_token_env=params.env_var_name(
                   "secret_store_token_env", secret_store_token_env))
    store_spec.parse("secret_store", secret_store)
    return AuthRunbook(cfg, steps.show_parameters(cfg))


class AuthRunbook:
    def __init__(self, cfg: dict[str, Any], secret: SecretRef) -> None:
        self.cfg = cfg
        self.secret = secret
        self.service_key: dict[str, Any] = {}
        self.test: dict[str, Any] = {}
        self.comparison: dict[str, Any] = {}
        self.outcome: str | None = None
        self.changes: list[dict[str, Any]] = []

    def _connect(self) -> Any:
        from .. import kube

        cfg = self.cfg
        return kube.connect(cfg["kubeconfig"], cfg["kube_context"], cfg["timeout_s"])

    # 1. the key being tested ------------------------------------------------------------------
    def key_under_test(self) -> dict[str, Any]:
        """Seed step 1 without the prefix: presence, length and fingerprint only."""
        value = self.secret.describe()
        if not self.secret.present:
            md = f"**No key**: `${self.secret.env_var}` is unset or empty. {ADVICE[NO_KEY]}"
        else:
            md = (f"`${self.secret.env_var}`: present, {self.secret.length} characters, fingerprint "
                  f"`{self.secret.fingerprint}`. (The seed prints the first characters; a prefix is part of the "
                  "key, so only the fingerprint is shown.)")
        record.record("key_under_test", value, markdown=md)
        return value

    # 2. which key the service uses ------------------------------------------------------------
    def service_key_source(self) -> dict[str, Any]:
        """The deployment's env: the variable's secretKeyRef (Secret name/key), or a literal (fingerprint only)."""
        cfg = self.cfg
        var = cfg["key_env_in_deployment"]
        with self._connect() as cluster:
            res = cluster.deployment(cfg["namespace"], cfg["deployment"])
        value: dict[str, Any] = {"variable": var, "container": cfg["container"], "kubectl": res.kubectl,
                                 "source": None, "finding": res.finding.to_dict() if res.finding else None}
        if res.ok:
            rows = [r for r in res.rows if r.get("name") == var]
            row = next((r for r in rows if r.get("container") == cfg["container"]), rows[0] if rows else None)
            if row is None:
                env_from = [f"{e['source']}/{e['name']}" for c in res.data.get("containers") or []
                            if c.get("name") == cfg["container"] for e in c.get("env_from") or []]
                value.update(source="missing", env_from=env_from)
            elif row["source"] == "secret":
                value.update(source="secret", secret=row.get("secret"), key=row.get("key"))
            elif row["source"] == "literal":
                fp = row.get("fingerprint") or (fingerprint(row["value"]) if row.get("value") else None)
                length = row.get("length") if row.get("redacted") else len(row.get("value") or "")
                value.update(source="literal", fingerprint=fp, length=length)
            else:
                value.update(source=row["source"], ref=row.get("ref"))
        self.service_key = value
        src = value["source"]
        if res.finding:
            md = f"**Unavailable**: {res.finding.message}"
        elif src == "secret":
            same = (value["secret"], value["key"]) == (cfg["secret_name"], cfg["secret_key"])
            md = (f"`{var}` in container `{cfg['container']}` comes from **secret `{value['secret']}`, key "
                  f"`{value['key']}`**." + ("" if same else
                                            f" Note: the parameters name `{cfg['secret_name']}`/`{cfg['secret_key']}`; "
                                            "the rotation below uses the parameters, the comparison uses the "
                                            "deployment's reference."))
        elif src == "literal":
            md = (f"`{var}` is a **literal value** in the deployment (redacted: {value['fingerprint']}, "
                  f"{value['length']} chars). A key belongs in a Secret; rotating the Secret will not change it.")
        elif src == "missing":
            md = (f"`{var}` is not set in container `{cfg['container']}`"
                  + (f"; it may come from envFrom {', '.join(value['env_from'])}." if value.get("env_from") else "."))
        else:
            md = f"`{var}` comes from {src}: `{value.get('ref')}`."
        record.record("service_key_source", value, markdown=f"`{res.kubectl}`\n\n{md}")
        return value

    # 3. direct test ---------------------------------------------------------------------------
    def test_key(self) -> dict[str, Any]:
        """Seed step 2: `GET /v1/models` with the key, a few bounded samples: 200, 401 or 403 and why."""
        cfg = self.cfg
        results = run_sync(self._probe_async(self.secret, TEST_SAMPLES)) if self.secret.present else []
        samples = [dict(r.to_dict(), detail=scrub(r.detail)) for r in results]
        codes = [r.status_code for r in results]
        verdict = (WORKS if 200 in codes and not any(c in (401, 403) for c in codes) else
                   FAILS if any(c in (401, 403) for c in codes) else None)
        self.test = {"verdict": verdict, "status_codes": codes, "samples": samples}
        rows = [(s["started_at"], s["status_code"] or "000", s["classification"], s["latency_ms"], s["detail"])
                for s in samples]
        md = (display.table(("sent (UTC)", "HTTP", "class", "ms", "detail"), rows) if rows else ADVICE[NO_KEY])
        md += "\n\n" + {WORKS: "**The key works.**",
                        FAILS: f"**The key is rejected** ({', '.join(str(c) for c in codes if c in (401, 403))}).",
                        None: "**No clear answer** about the key."}[verdict]
        if 401 in codes:
            md += f"\n\n{CODESTRAL}"
        record.record("key_test", self.test, markdown=f"`GET {cfg['mistral_url']}/v1/models`\n\n{md}")
        return self.test

    async def _probe_async(self, secret: SecretRef, n: int) -> list[probes.ProbeResult]:
        """`n` bounded probes of `GET /v1/models` with `secret`, `TEST_INTERVAL_S` apart."""
        cfg = self.cfg
        out = []
        async with probes.client(cfg["timeout_s"], tls=cfg["mistral_url"].startswith("https:"),
                                 ca_bundle=cfg["ca_bundle"]) as c:
            for i in range(n):
                if i:
                    await asyncio.sleep(TEST_INTERVAL_S)
                out.append(await probes.probe_mistral(c, cfg["mistral_url"], secret, cfg["timeout_s"]))
        return out

    # 4. does the Secret hold the tested key? -----------------------------------------------------
    def compare_keys(self) -> dict[str, Any]:
        cfg = self.cfg
        src = self.service_key
        finding = None
        if src.get("source") == "literal":
            where, service_fp = "the deployment's literal value", src.get("fingerprint")
        else:
            name = src.get("secret") or cfg["secret_name"]
            key = src.get("key") or cfg["secret_key"]
            where = f"secret/{name}[{key}]"
            with self._connect() as cluster:
                res = cluster.secret_fingerprint(cfg["namespace"], name, key)
            finding = res.finding
            service_fp = (res.data or {}).get("fingerprint") if res.ok else None
        tested_fp = self.secret.fingerprint
        same = None if service_fp is None or tested_fp is None else service_fp == tested_fp
        verdict = self.test.get("verdict")
        if not self.secret.present:
            outcome = NO_KEY
        elif verdict is None:
            outcome = INCONCLUSIVE
        elif same is None:
            outcome = NOT_COMPARED
        elif verdict == WORKS:
            outcome = RESTART if same else SECRET_STALE
        else:
            outcome = KEY_REJECTED if same else OTHER_KEY
        self.outcome = outcome
        self.comparison = {"where": where, "service_fingerprint": service_fp, "tested_fingerprint": tested_fp,
                           "same": same, "test": verdict, "outcome": outcome, "advice": ADVICE[outcome],
                           "finding": finding.to_dict() if finding else None}
        table = display.table(("tested key", "Secret holds the same key", "what it means"), [
            ("works", "yes", "pods may run an old key: rollout restart"),
            ("works", "no", "Secret is stale: rotate it to the working key, restart"),
            ("rejected (401/403)", "yes", f"key revoked or inactive: new key at {CONSOLE}, rotate, restart"),
            ("rejected (401/403)", "no", "wrong key tested: test the Secret's key before changing anything"),
        ])
        md = (f"Service key ({where}): `{service_fp or 'unknown'}`; tested key: `{tested_fp or 'none'}` -> "
              f"**{ {True: 'same key', False: 'different keys', None: 'not compared'}[same] }**."
              + (f"\n\n{finding.message}" if finding else "")
              + f"\n\n{table}\n\n**{outcome}**: {ADVICE[outcome]}")
        record.record("key_comparison", self.comparison, markdown=md)
        return self.comparison

    # 5. rotation and restart ------------------------------------------------------------------------
    def rotate_and_restart(self) -> list[dict[str, Any]]:
        """Seed steps 4 and 5: rotate the Secret to the key in `new_key_env` (tested first), then restart."""
        from ..kube import write as remediate

        cfg = self.cfg
        new = read_secret(cfg["new_key_env"]) if cfg["new_key_env"] else None
        rotation_ok: bool | None = None  # None: no rotation planned
        with self._connect() as cluster:
            if new is None or not new.present:
                why = ("`new_key_env` is empty: no rotation planned" if not cfg["new_key_env"] else
                       f"`${cfg['new_key_env']}` is unset or empty: no new key, rotation skipped")
                value = {"skipped": True, "reason": why, "applied": False}
                record.record("change_rotate_secret", value, markdown=f"**Rotation skipped**: {why}. To rotate, "
                              f"create a key at {CONSOLE} and export it in the variable named by `new_key_env`.")
                self.changes.append(value)
            else:
                check = run_sync(self._probe_async(new, 1))[0]
                new_works = check.status_code == 200
                apply = cfg["apply_changes"] and new_works
                if cfg["secret_store"]:  # issue 18: rotate in the secret manager the Secret is synced from
                    value, rotation_ok, why_not = self._rotate_in_store(cluster, new, check)
                    self.changes.append(value)
                    return self._restart(cluster, rotation_ok, why_not)
                change = remediate.rotate_secret(cluster, cfg["namespace"], cfg["secret_name"], cfg["secret_key"],
                                                 cfg["new_key_env"], apply_changes=apply, operator=cfg["operator"],
                                                 incident=cfg["incident_id"], timeout_s=cfg["timeout_s"])
                test_note = (f"New key {new.fingerprint} tested first: HTTP {check.status_code or '000'} "
                             f"({check.classification}).")
                if cfg["apply_changes"] and not new_works:
                    test_note += " **Not applied**: the new key does not work, rotating it in would not help."
                change.note = f"{test_note} {change.note}".strip()
                record.record("new_key_test", {"env_var": new.env_var, "fingerprint": new.fingerprint,
                                               "length": new.length, "status_code": check.status_code,
                                               "classification": check.classification, "works": new_works},
                              markdown=test_note)
                value = steps.show_change("change_rotate_secret", change)
                self.changes.append(value)
                already = change.dry_run_ok and not change.diff  # the Secret already holds the new key
                rotation_ok = change.ok and (change.applied or already or not cfg["apply_changes"])
            return self._restart(cluster, rotation_ok)

    def _restart(self, cluster: Any, rotation_ok: bool | None, why_not: str = "") -> list[dict[str, Any]]:
        """Seed step 5: the rollout restart, applied only after a rotation that took (or for 'pods run an old key')."""
        from ..kube import write as remediate

        cfg = self.cfg
        restart_apply = cfg["apply_changes"] and (rotation_ok is True or
                                                  (rotation_ok is None and self.outcome == RESTART))
        change = remediate.rollout_restart(cluster, cfg["namespace"], cfg["deployment"],
                                           apply_changes=restart_apply, operator=cfg["operator"],
                                           incident=cfg["incident_id"], timeout_s=cfg["timeout_s"])
        if cfg["apply_changes"] and not restart_apply:
            change.note = ("Not applied: " + (why_not or "the rotation did not succeed" if rotation_ok is False else
                                              "no new key was rotated in and the diagnosis is not 'pods run an "
                                              "old key', so a restart would not help") + ".")
        self.changes.append(steps.show_change("change_rollout_restart", change))
        return self.changes

    def _rotate_in_store(self, cluster: Any, new: SecretRef, check: Any) -> tuple[dict[str, Any], bool, str]:
        """Rotate in the secret manager `secret_store` names (tested key, dry run unless approved), then wait,
        bounded, for the Secret the pods read to be synced to the new key; (record, whether to restart, why not)."""
        from ..errors import RunbookError
        from ..secretstores import base as stores, spec as store_spec

        cfg = self.cfg
        works = True if check.status_code == 200 else False if check.status_code in (401, 403) else None
        seen = f"GET {cfg['mistral_url']}/v1/models: HTTP {check.status_code or '000'} ({check.classification})"
        try:
            store = store_spec.make_store(store_spec.parse("secret_store", cfg["secret_store"]),
                                          token_env=cfg["secret_store_token_env"], timeout_s=cfg["timeout_s"],
                                          ca_bundle=cfg["ca_bundle"])
            change = stores.rotate_key(store, cfg["new_key_env"], test=lambda _ref: (works, seen),
                                       apply_changes=cfg["apply_changes"], operator=cfg["operator"],
                                       incident=cfg["incident_id"])
        except RunbookError as exc:  # e.g. the store's client library is not installed
            value = {"skipped": True, "reason": str(exc), "applied": False}
            record.record("change_rotate_secret", value, markdown=f"**Rotation not possible**: {exc}")
            return value, False, ""
        record.record("new_key_test", change.new_key_test, markdown=f"New key {new.fingerprint} tested first: {seen}.")
        value = steps.show_change("change_rotate_secret", change)
        if not (change.applied and change.verified):
            return value, change.ok and not cfg["apply_changes"], ""
        synced = self._wait_for_sync(cluster, new)
        return value, synced, "" if synced else (f"secret/{cfg['secret_name']} does not hold the new key yet (see "
                                                 "the sync step): pods restarted now would read the old one")

    def _wait_for_sync(self, cluster: Any, new: SecretRef) -> bool:
        """Bounded: until secret/<secret_name>[<secret_key>] holds the new key (its controller synced it)."""
        import time

        from .. import bounds

        cfg = self.cfg
        cell, deadline = bounds.from_kernel()
        rooms = [SYNC_WAIT_S] + ([bounds.wait_room(cell, cfg["timeout_s"]) - 2 * cfg["timeout_s"]] if cell else [])
        run_left = bounds.run_room(deadline, cfg["timeout_s"])
        wait_s = max(0.0, min(rooms + ([run_left] if run_left is not None else [])))
        end, seen = time.monotonic() + wait_s, None
        while True:
            res = cluster.secret_fingerprint(cfg["namespace"], cfg["secret_name"], cfg["secret_key"])
            seen = (res.data or {}).get("fingerprint") if res.ok else None
            if seen == new.fingerprint or time.monotonic() + SYNC_POLL_S > end:
                break
            time.sleep(SYNC_POLL_S)
        synced = seen == new.fingerprint
        value = {"secret": cfg["secret_name"], "key": cfg["secret_key"], "waited_up_to_s": round(wait_s),
                 "fingerprint_seen": seen, "synced": synced}
        where = f"secret/{cfg['secret_name']}[{cfg['secret_key']}]"
        md = (f"{where} holds the new key ({new.fingerprint}): its controller synced it; restarting."
              if synced else
              f"**{where} still holds {seen or 'no readable key'} after {round(wait_s)} s**: the controller "
              "has not synced the new key yet, so a restart would start pods on the old one. Make it sync now "
              "(External Secrets: `kubectl annotate externalsecret <name> force-sync=$(date +%s) --overwrite`; "
              "CSI driver: its rotation poll), then restart.")
        record.record("secret_sync", value, markdown=md)
        return synced

    # 6. communications -------------------------------------------------------------------------
    def communicate(self) -> dict[str, Any]:
        applied = any(c.get("applied") for c in self.changes)
        level = steps.incident_severity(self.cfg, "P1", "the API rejects our key (401): every call fails",
                                        by="diagnose_auth")
        return steps.communicate(
            self.cfg, by="diagnose_auth", level=level, status="MITIGATING" if applied else "INVESTIGATING",
            impact="Users cannot use AI features: the AI provider rejects our API key (401)",
            action=("Rotated the Mistral API key and restarting the service" if applied else
                    "Diagnosing the API key; rotation and restart prepared as a dry run"))

    # 7. state after ------------------------------------------------------------------------------
    def state_after(self) -> dict[str, Any]:
        return steps.state_after(self.cfg, self.secret)

    def summary(self) -> dict[str, Any]:
        applied = [c for c in self.changes if c.get("applied")]
        line = (f"401 {self.outcome}: tested key {self.test.get('verdict') or 'untested'} "
                f"(HTTP {display.codes(self.test.get('status_codes'))}), service key "
                f"{ {True: 'same', False: 'different', None: 'not compared'}[self.comparison.get('same')] }; "
                + (", ".join(c.get("action", "change") for c in applied) + " applied" if applied else "dry run"))
        value = {"line": line, "outcome": self.outcome, "changes_applied": len(applied),
                 "incident_id": self.cfg["incident_id"]}
        record.record(record.VERDICT, value, markdown=f"### Verdict\n\n`{line}`")
        return value
