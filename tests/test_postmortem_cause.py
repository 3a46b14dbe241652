"""Issue 13, item 4: the postmortem's Root Cause names only what the measurement supports.

An egress NetworkPolicy that would block the API while calls connect is a true finding, but not the
cause of a hang: it goes to the action items, not the Root Cause; one that matches the measurement
(TCP times out, as dropped egress does) is the cause. The actions of a hung API are not egress rules.
"""

from __future__ import annotations

from typing import Any

from runbook_lib import record
from runbook_lib.records.incident_data import IncidentData
from runbook_lib.runbooks import postmortem_doc

NOT_CAUSE = ("the egress NetworkPolicy would block the API, but calls get through (TCP connects): "
             "it is not enforced or does not select these pods; not the cause")
CAUSE = ("the egress NetworkPolicy would block the API and TCP connections time out, as a dropped "
         "egress does: consistent with the policy being the cause")


def _incident(verdict: dict[str, Any]) -> IncidentData:
    data = IncidentData(source="test", index={"error_class": "network"})
    data.records = {"triage": [{"name": record.VERDICT, "value": {"branch": "network"}}],
                    "diagnose_network": [{"name": record.VERDICT, "value": verdict}]}
    return data


def test_a_policy_that_is_not_enforced_is_an_action_not_the_root_cause_of_a_hang():
    data = _incident({"cause": "first_byte", "policy_cause": NOT_CAUSE, "policy_is_cause": False})
    cause = postmortem_doc.root_cause(data)
    assert cause == "The API accepted connections but did not answer in time (first byte)."
    actions = [a for _p, a in postmortem_doc.action_items(data, {})]
    assert any("not this incident's cause" in a and "not enforced" in a for a in actions), actions
    assert not any(a.startswith("Review egress NetworkPolicies") for a in actions), actions  # not a hang's fix
    assert any("time to first byte" in a for a in actions)


def test_a_policy_matching_the_measurement_is_the_root_cause():
    data = _incident({"cause": "tcp", "policy_cause": CAUSE, "policy_is_cause": True})
    assert postmortem_doc.root_cause(data) == ("Connections to the API could not be established in time (TCP); "
                                               + CAUSE + ".")
    actions = [a for _p, a in postmortem_doc.action_items(data, {})]
    assert actions[0].startswith("Review egress NetworkPolicies")
    assert not any("not this incident's cause" in a for a in actions)


def test_records_written_before_policy_is_cause_existed_are_read_by_their_words():
    old_not = _incident({"cause": "first_byte", "policy_cause": NOT_CAUSE})
    old_is = _incident({"cause": "tcp", "policy_cause": CAUSE})
    assert "NetworkPolicy" not in postmortem_doc.root_cause(old_not)
    assert "NetworkPolicy" in postmortem_doc.root_cause(old_is)
