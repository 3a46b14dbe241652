"""incident.json: updates from several processes at once lose nothing (serve appends while respond writes)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from runbook_lib.records.incident import read_index, update_index


def _writer(folder: str, name: str, n: int) -> None:
    for i in range(n):
        update_index(folder, **{f"{name}-{i}": i})


def test_concurrent_updates_from_processes_and_threads_keep_every_section(tmp_path: Path):
    update_index(tmp_path, id="INC-1")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), f"p{k}", 40)) for k in range(4)]
    for p in procs:
        p.start()
    _writer(str(tmp_path), "main", 40)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    index = read_index(tmp_path) or {}
    missing = [f"{w}-{i}" for w in ("p0", "p1", "p2", "p3", "main") for i in range(40) if f"{w}-{i}" not in index]
    assert not missing, f"{len(missing)} updates lost, e.g. {missing[:5]}"
    assert index["id"] == "INC-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incident.json"]  # no lock or temp files left
