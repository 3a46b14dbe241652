import pytest

from runbook_lib.labels import equality_labels, labels_match, parse_label_selector, split_terms


def test_parse_all_requirement_forms():
    reqs = parse_label_selector("app=a,tier!=db,env in (prod, staging),x notin (y),has,!canary,k==v")
    assert reqs == [("app", "=", ("a",)), ("tier", "!=", ("db",)), ("env", "in", ("prod", "staging")),
                    ("x", "notin", ("y",)), ("has", "exists", ()), ("canary", "!exists", ()), ("k", "=", ("v",))]


def test_split_keeps_sets_whole_and_malformed_raises():
    assert split_terms("a in (x,y),b=c") == ["a in (x,y)", "b=c"]
    with pytest.raises(ValueError):
        parse_label_selector("a=b,,c=d")
    with pytest.raises(ValueError):
        parse_label_selector("a b c")


def test_matching_and_equality_labels():
    reqs = parse_label_selector("app=mistral-service,!canary")
    assert labels_match({"app": "mistral-service"}, reqs)
    assert not labels_match({"app": "mistral-service", "canary": "1"}, reqs)
    assert equality_labels("app=mistral-service,tier in (web),env in (a,b)") == {"app": "mistral-service",
                                                                                 "tier": "web"}
