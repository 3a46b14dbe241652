import json

import nbformat
import pytest

from runbook_lib import record


def _nb_with_outputs(*payloads):
    nb = nbformat.v4.new_notebook()
    for p in payloads:
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("display_data", data={record.MIME: p, "text/plain": "x"})]
        nb.cells.append(cell)
    return nb


def test_read_records_last_value_wins_and_order_kept(tmp_path):
    nb = _nb_with_outputs({"name": "a", "recorded_at": "t", "value": 1},
                          {"name": "b", "recorded_at": "t", "value": {"x": [1, 2]}},
                          {"name": "a", "recorded_at": "t", "value": 3})
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert record.read_records(path) == {"a": 3, "b": {"x": [1, 2]}}
    assert [r["cell"] for r in record.iter_records(path)] == [0, 1, 2]


def test_record_outside_kernel_keeps_value_locally():
    record.record("unit_value", {"n": 1.5})
    assert record.LOCAL["unit_value"] == {"n": 1.5}


def test_record_rejects_bad_names_and_unserialisable_values():
    with pytest.raises(ValueError):
        record.record("Bad Name", 1)
    with pytest.raises(TypeError):
        record.record("ok_name", object())
    with pytest.raises(ValueError):
        record.record("nan_value", float("nan"))


def test_string_encoded_payload_is_read(tmp_path):
    nb = _nb_with_outputs(json.dumps({"name": "s", "recorded_at": "t", "value": "v"}))
    assert record.read_records(nb) == {"s": "v"}
