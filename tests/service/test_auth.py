"""Keys and scopes."""

from __future__ import annotations

import pytest

from service.auth import (
    KeyCommandError,
    Principal,
    authenticate,
    create_key,
    hash_key,
    revoke_key,
    validate_scope,
)


@pytest.mark.parametrize("scope, permission, allowed", [
    ("intake", "predict", True), ("intake", "intake", True), ("intake", "read", False),
    ("intake", "feedback", False), ("intake", "admin", False),
    ("protection", "read", True), ("protection", "feedback", True), ("protection", "intake", False),
    ("protection", "admin", False),
    ("admin", "predict", True), ("admin", "intake", True), ("admin", "read", True), ("admin", "admin", True),
    ("department:信用卡中心", "read", True), ("department:信用卡中心", "feedback", True),
    ("department:信用卡中心", "predict", False), ("department:信用卡中心", "admin", False),
])
def test_scope_permissions(scope, permission, allowed):
    assert Principal(1, "k", scope).can(permission) is allowed


def test_department_scope_names_its_department():
    assert Principal(1, "k", "department:零售信贷部").department == "零售信贷部"
    assert Principal(1, "k", "protection").department is None
    assert validate_scope(" department: 零售信贷部 ") == "department:零售信贷部"
    for bad in ("root", "department:", "department:  ", "Admin", ""):
        with pytest.raises(KeyCommandError):
            validate_scope(bad)


def test_keys_authenticate_until_revoked(db):
    with db.transaction() as s:
        row, key = create_key(s, "counter-system", "intake")
    assert key.startswith("xb_") and len(key) > 40 and row.key_hash == hash_key(key) and key.startswith(row.prefix)
    with db.reading() as s:
        assert authenticate(s, key) == Principal(row.id, "counter-system", "intake")
        assert authenticate(s, key + "x") is None
    with db.transaction() as s:
        revoke_key(s, name="counter-system")
    with db.reading() as s:
        assert authenticate(s, key) is None
    with pytest.raises(KeyCommandError, match="exists already"), db.transaction() as s:
        create_key(s, "counter-system", "admin")
    with pytest.raises(KeyCommandError, match="no key"), db.transaction() as s:
        revoke_key(s, key_id=424242)


def test_a_revoked_key_is_refused_by_the_api(client, h, db):
    assert client.post("/v1/predict", json={"text": "信用卡"}, headers=h["intake"]).status_code == 200
    with db.transaction() as s:
        revoke_key(s, name="intake")
    r = client.post("/v1/predict", json={"text": "信用卡"}, headers=h["intake"])
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
