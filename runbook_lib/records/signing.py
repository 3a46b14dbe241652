"""Detached seals for evidence bundles: the manifest's digest, and optionally an Ed25519 signature.

A bundle's manifest.json lists every file's sha256, but it sits inside the bundle it protects:
whoever can rewrite a file can re-hash it into the manifest and `verify` says intact. So at
collection the manifest's own sha256 is recorded outside the bundle (incident.json and the
postmortem), and, when a signing key is configured, signed: the signature is kept beside the
bundle (`<bundle>.manifest.sig`, base64) and in incident.json. `runbook verify` compares the
manifest with the digest and, given the public key (`--public-key` or $RUNBOOK_VERIFY_PUBLIC_KEY_FILE),
checks the signature. Changing the evidence then means forging the signature, not just re-hashing.

Keys: `$RUNBOOK_SIGNING_KEY_FILE` (a PEM Ed25519 private key, e.g. `openssl genpkey -algorithm
ed25519`) or `$RUNBOOK_SIGNING_KEY` (the same PEM text); never a parameter, never recorded (the
variable's name makes it a secret for redaction and the parameter guard). The signature is plain
Ed25519 over the manifest's bytes, so `openssl pkeyutl -verify -rawin` checks it too.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import ParameterError

KEY_ENV = "RUNBOOK_SIGNING_KEY"
KEY_FILE_ENV = "RUNBOOK_SIGNING_KEY_FILE"
PUBLIC_KEY_ENV = "RUNBOOK_VERIFY_PUBLIC_KEY_FILE"
SIG_SUFFIX = ".manifest.sig"


def digest(data: bytes) -> str:
    """The recorded form of a manifest's digest."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _private_key(environ: dict[str, str] | None = None) -> Any:
    """The configured Ed25519 private key, or None; a configured but unusable key is an error naming it."""
    env = os.environ if environ is None else environ
    path, text = env.get(KEY_FILE_ENV, "").strip(), env.get(KEY_ENV, "").strip()
    if not path and not text:
        return None
    name = f"${KEY_FILE_ENV}" if path else f"${KEY_ENV}"
    try:
        pem = Path(path).read_bytes() if path else text.encode()
    except OSError as exc:
        raise ParameterError(name, path, f"a readable PEM Ed25519 private key file ({exc.strerror})") from None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ParameterError(name, "<not shown>", "an unencrypted PEM Ed25519 private key (openssl genpkey "
                                                  "-algorithm ed25519)")
    return key


def public_fingerprint(public_key: Any) -> str:
    """sha256 of the raw public key, short: names the key in records without showing anything secret."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def seal(manifest_bytes: bytes, bundle_folder: Path) -> dict[str, Any]:
    """The seal recorded for a freshly written bundle: digest, and signature when a key is configured."""
    out: dict[str, Any] = {"manifest_sha256": digest(manifest_bytes), "signed": False}
    key = _private_key()
    if key is None:
        return out
    signature = base64.b64encode(key.sign(manifest_bytes)).decode()
    sig_path = bundle_folder.with_name(bundle_folder.name + SIG_SUFFIX)
    sig_path.write_text(signature + "\n", "utf-8")
    return {**out, "signed": True, "signature": signature, "signature_file": sig_path.name,
            "public_key": public_fingerprint(key.public_key())}


def load_public_key(path: str | Path, option: str = "--public-key") -> Any:
    """A PEM Ed25519 public key from `path`, or an error naming the option."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ParameterError(option, str(path), f"a readable PEM Ed25519 public key file ({exc.strerror})") from None
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise ParameterError(option, str(path), "a PEM Ed25519 public key (openssl pkey -in KEY -pubout)")
    return key


def check(manifest_bytes: bytes, recorded: dict[str, Any], public_key: Any | None) -> tuple[list[str], list[str]]:
    """(problems, notes) of a manifest against the seal recorded at collection."""
    problems, notes = [], []
    want = recorded.get("manifest_sha256")
    if want:
        if digest(manifest_bytes) != want:
            problems.append(f"manifest.json's sha256 differs from the digest recorded at collection ({want[:19]}…): "
                            "the manifest was rewritten")
        else:
            notes.append("manifest digest matches the one recorded at collection")
    else:
        notes.append("no manifest digest recorded (collected before seals were recorded)")
    signature = recorded.get("signature")
    if public_key is None:
        if signature:
            notes.append(f"signed by {recorded.get('public_key', '?')}; signature not checked (pass --public-key "
                         f"or set ${PUBLIC_KEY_ENV})")
        return problems, notes
    if not signature:
        problems.append("a public key was given but the bundle was not signed at collection")
        return problems, notes
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(signature, validate=True), manifest_bytes)
        notes.append(f"signature valid ({public_fingerprint(public_key)})")
    except (InvalidSignature, ValueError):
        problems.append(f"signature does not verify with the given public key ({public_fingerprint(public_key)})")
    return problems, notes
