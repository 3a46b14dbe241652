"""Bundles sealed outside themselves: the manifest's digest in incident.json, an Ed25519 signature beside.

The attack this answers: change an evidence file and re-hash it into manifest.json; the bundle
check alone then says intact. Keys are made with the real `openssl`, and `openssl pkeyutl` checks
our signature, so the seal is plain Ed25519 anyone can verify. The evidence runbook is run for
real through the CLI with a signing key configured; the private key is in no file it writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from matrix_support import cli, cli_env, read_json

pytestmark = pytest.mark.notebook


def _keys(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True,
                   capture_output=True)
    return private, public


def _incident(root: Path) -> Path:
    started = datetime.now(UTC) - timedelta(minutes=3)
    folder = root / f"{started:%Y%m%dT%H%M%SZ}-SEAL-1"
    folder.mkdir(parents=True)
    index = {"id": "SEAL-1", "folder": ".", "started_at": started.isoformat().replace("+00:00", "Z"),
             "finished_at": (started + timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
             "status": "diagnosed", "severity": "P2", "error_class": "rate_limit", "notebooks": [],
             "changes_applied": []}
    (folder / "incident.json").write_text(json.dumps(index), "utf-8")
    return folder


def _rehash_attack(bundle: Path) -> str:
    """Alter one evidence file and re-hash it into the manifest: what the bundle check cannot see."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["files"][0]
    victim = bundle / entry["path"]
    if victim.suffix == ".json":  # still valid JSON, so readers do not notice either
        value = json.loads(victim.read_text())
        victim.write_text(json.dumps({"forged": True, "was": value}))
    else:
        victim.write_bytes(victim.read_bytes() + b"\nforged line\n")
    entry["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    entry["bytes"] = victim.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return entry["path"]


def test_signed_evidence_verifies_and_a_rehashed_bundle_is_caught(tmp_path, api_key):
    root = tmp_path / "outputs"
    folder = _incident(root)
    private, public = _keys(tmp_path)
    _, other_public = _keys(tmp_path, "other")
    env = cli_env(api_key, RUNBOOK_SIGNING_KEY_FILE=str(private))
    run = cli(["run", "evidence", "-q", "--output-dir", str(root), "-p", "incident_folder", str(folder),
               "-p", "prometheus_url", "", "-p", "timeout_s", "2", "-p", "margin", "1m"], cwd=tmp_path, env=env,
              timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    seal = read_json(folder / "incident.json")["evidence"]["seal"]
    bundle = folder / read_json(folder / "incident.json")["evidence"]["bundle"]
    manifest = (bundle / "manifest.json").read_bytes()
    assert seal["signed"] and seal["manifest_sha256"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
    sig_file = folder / seal["signature_file"]
    assert sig_file.read_text().strip() == seal["signature"]

    # The real openssl accepts our signature over the manifest's bytes.
    raw_sig = tmp_path / "sig.bin"
    raw_sig.write_bytes(base64.b64decode(seal["signature"]))
    ossl = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
                           "-in", str(bundle / "manifest.json"), "-sigfile", str(raw_sig)], capture_output=True,
                          text=True)
    assert ossl.returncode == 0 and "Signature Verified Successfully" in ossl.stdout, ossl.stdout + ossl.stderr

    pem = private.read_text()
    body = "".join(pem.splitlines()[1:-1])
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert written and not [p for p in written if body[:24] in p.read_text(errors="replace")], "private key leaked"

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return cli(["verify", "SEAL-1", "--output-dir", str(root), *extra], cwd=tmp_path, env=cli_env(api_key))

    ok = verify("--public-key", str(public))
    assert ok.returncode == 0 and "signature valid" in ok.stdout, ok.stdout + ok.stderr
    wrong = verify("--public-key", str(other_public))
    assert wrong.returncode == 1 and "signature does not verify" in wrong.stdout, wrong.stdout

    victim = _rehash_attack(bundle)
    (folder / f"{bundle.name}.tar.gz").unlink()  # the attacker drops the archive that would disagree
    index = read_json(folder / "incident.json")
    index["evidence"]["archive"] = None
    (folder / "incident.json").write_text(json.dumps(index))
    from runbook_lib.records import bundle as bundle_mod
    assert bundle_mod.verify(bundle) == [], "the attack must fool the bundle check alone"
    caught = verify()
    assert caught.returncode == 1 and "digest recorded at collection" in caught.stdout, caught.stdout
    from runbook_lib.records.incident_data import load
    assert any("digest recorded at collection" in p for p in load(str(folder)).seal_problems), victim

    # The attacker also rewrites the digest in incident.json: only the signature still tells.
    index["evidence"]["seal"]["manifest_sha256"] = "sha256:" + hashlib.sha256(
        (bundle / "manifest.json").read_bytes()).hexdigest()
    (folder / "incident.json").write_text(json.dumps(index))
    assert verify().returncode == 0  # without the public key the forgery passes: say so in the README
    forged = verify("--public-key", str(public))
    assert forged.returncode == 1 and "signature does not verify" in forged.stdout, forged.stdout


def test_unsigned_bundles_and_bad_keys_say_so(tmp_path, monkeypatch):
    from runbook_lib.errors import ParameterError
    from runbook_lib.records import signing

    _, public = _keys(tmp_path)
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.delenv(signing.KEY_FILE_ENV, raising=False)
    bundle = tmp_path / "evidence-x"
    bundle.mkdir()
    seal = signing.seal(b'{"files": []}\n', bundle)
    assert seal == {"manifest_sha256": "sha256:" + hashlib.sha256(b'{"files": []}\n').hexdigest(), "signed": False}
    problems, _ = signing.check(b'{"files": []}\n', seal, signing.load_public_key(public))
    assert problems == ["a public key was given but the bundle was not signed at collection"]
    (tmp_path / "junk.pem").write_text("not a key")
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(tmp_path / "junk.pem"))
    with pytest.raises(ParameterError) as bad:
        signing.seal(b"{}", bundle)
    assert bad.value.name == "$RUNBOOK_SIGNING_KEY_FILE" and "not a key" not in str(bad.value)
    with pytest.raises(ParameterError) as bad_pub:
        signing.load_public_key(tmp_path / "junk.pem")
    assert bad_pub.value.name == "--public-key"
