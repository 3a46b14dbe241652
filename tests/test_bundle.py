import json
import secrets
import tarfile

import pytest

from runbook_lib.records import bundle


def test_bundle_is_complete_redacted_and_verifiable(tmp_path):
    key = "sim-" + secrets.token_urlsafe(24)
    with bundle.BundleWriter(tmp_path, "incident-1", secrets=[key], window={"start": "a", "end": "b"}) as b:
        b.add_text("logs/app.txt", f"error: 401 with key {key}\nAuthorization: Bearer {key}\n",
                   what="pod logs", source="kubectl logs")
        b.add_json("k8s/secret.json", {"kind": "Secret", "data": {"api-key": "c2VjcmV0dmFsdWU="}},
                   what="Secret", source="kubectl get secret")
        b.add_missing("metrics", "http://prom:9090", "Prometheus unreachable: ConnectError")
    folder, archive = tmp_path / "incident-1", tmp_path / "incident-1.tar.gz"
    assert folder.is_dir() and archive.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial leftovers
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["k8s/secret.json", "logs/app.txt"]  # sorted: stable
    assert manifest["missing"] == [{"what": "metrics", "source": "http://prom:9090",
                                    "reason": "Prometheus unreachable: ConnectError"}]
    assert bundle.verify(folder) == []
    everything = "".join(p.read_text() for p in folder.rglob("*") if p.is_file())
    assert key not in everything and "c2VjcmV0dmFsdWU=" not in everything and "secretvalue" not in everything
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(["incident-1", "incident-1/manifest.json", "incident-1/logs",
                                                 "incident-1/logs/app.txt", "incident-1/k8s",
                                                 "incident-1/k8s/secret.json"])
    (folder / "logs" / "app.txt").write_text("tampered")
    assert bundle.verify(folder) == ["logs/app.txt: sha256 differs from the manifest"]
    (folder / "k8s" / "planted.json").write_text("{}")
    (folder / "k8s" / "secret.json").unlink()
    assert bundle.verify(folder) == ["k8s/planted.json: not in the manifest", "k8s/secret.json: missing",
                                     "logs/app.txt: sha256 differs from the manifest"]


def test_a_crash_leaves_no_bundle_that_looks_whole(tmp_path):
    with pytest.raises(RuntimeError), bundle.BundleWriter(tmp_path, "incident-2") as b:
        b.add_text("a.txt", "partial", what="x", source="y")
        raise RuntimeError("collector died")
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_and_refuses_paths_outside(tmp_path):
    with bundle.BundleWriter(tmp_path, "b"):
        pass
    with pytest.raises(FileExistsError):
        bundle.BundleWriter(tmp_path, "b").__enter__()
    with pytest.raises(ValueError), bundle.BundleWriter(tmp_path, "c") as b:
        b.add_text("../escape.txt", "x", what="x", source="y")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "c").exists()
    with pytest.raises(ValueError):
        bundle.BundleWriter(tmp_path, "../up")


def test_a_forged_manifest_cannot_point_outside_the_bundle(tmp_path):
    (tmp_path / "outside.txt").write_text("not evidence")
    with bundle.BundleWriter(tmp_path, "b") as b:
        b.add_text("a.txt", "a", what="a", source="test")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["files"].append({"path": "../outside.txt", "sha256": "0" * 64, "what": "x", "source": "x", "bytes": 1})
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert bundle.verify(tmp_path / "b") == ["../outside.txt: path outside the bundle"]

