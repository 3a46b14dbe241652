import hashlib

from runbook_lib.secrets import fingerprint, read_secret


def test_fingerprint_is_short_sha256_not_a_prefix():
    key = "abcdefghijklmnopqrstuvwx12345678"
    fp = fingerprint(key)
    assert fp == "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    assert key[:4] not in fp


def test_read_secret_present_hides_value_everywhere_but_reveal():
    key = "Zq9XkT2mLp8VwR4sNb6YcH1dFg3JeA5u"
    ref = read_secret("MY_KEY", {"MY_KEY": key})
    assert ref.present and ref.length == len(key) and ref.reveal() == key
    for shown in (repr(ref), str(ref), str(ref.describe())):
        assert key not in shown
        assert key[:8] not in shown


def test_read_secret_absent_or_blank():
    assert not read_secret("NOPE", {}).present
    blank = read_secret("BLANK", {"BLANK": "   "})
    assert not blank.present and blank.fingerprint is None and "absent" in str(blank)


def test_two_keys_are_told_apart_by_fingerprint():
    a, b = read_secret("A", {"A": "key-one"}), read_secret("B", {"B": "key-two"})
    assert a.fingerprint != b.fingerprint
