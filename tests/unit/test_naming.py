"""File names and keys: the convention, and keys that try to leave their tenant."""

import uuid
from datetime import UTC, datetime

import pytest

from backups.core.naming import (
    InvalidKey,
    backup_file_name,
    check_tenant_key,
    tenant_key,
    validate_schema_name,
    with_suffix,
)

AT = datetime(2025, 11, 26, 3, 0, tzinfo=UTC)


def test_file_name_convention():
    assert backup_file_name(schema="clinica_demo", fmt="sql", compression="zstd", automatic=True, at=AT) == \
        "auto-sql-clinica_demo-2025-11-26-030000.sql.zst"
    assert backup_file_name(schema="c1", fmt="dump", compression="none", automatic=False, at=AT, encryption="age",
                            suffix="-2") == "backup-dump-c1-2025-11-26-030000-2.dump.age"
    assert backup_file_name(schema="c1", fmt="json", compression="gzip", automatic=False, at=AT).endswith(".jsonl.gz")


def test_collision_suffix_replaces_any_earlier_one():
    name = "auto-sql-clinica_demo-2025-11-26-030000.sql.zst.age"
    assert with_suffix(name, 2) == "auto-sql-clinica_demo-2025-11-26-030000-2.sql.zst.age"
    assert with_suffix(with_suffix(name, 2), 3) == "auto-sql-clinica_demo-2025-11-26-030000-3.sql.zst.age"
    with pytest.raises(ValueError):
        with_suffix("notes.txt", 2)


@pytest.mark.parametrize("bad", ["", "Clinic", "a-b", "a b", "x;drop", "a" * 64, "1abc"])
def test_unsafe_schema_names_are_refused(bad):
    with pytest.raises(ValueError):
        validate_schema_name(bad)


UID = uuid.UUID("0b6f2c1e-8d5a-4f0e-9a57-3c1d2e4f5a6b")
OTHER_UID = uuid.UUID("7d9e0f1a-2b3c-4d5e-8f60-718293a4b5c6")
P = f"clinic1/{UID}/"


def test_key_of_own_tenant_is_accepted():
    key = tenant_key("clinic1", UID, "backup-sql-clinic1-2025-11-26-030000.sql.zst")
    assert key == f"clinic1/{UID}/backup-sql-clinic1-2025-11-26-030000.sql.zst"
    assert check_tenant_key(key, "clinic1", UID) == key


@pytest.mark.parametrize("key", [
    f"clinic10/{UID}/backup.sql", P + "../clinic2/backup.sql", "/" + P + "backup.sql", P,
    P + "sub/backup.sql", P + "/backup.sql", P + "./backup.sql", P + "..", P + "\\..\\x",
    P + "x\x00y", P + "a" * 2000, "../" + P + "backup.sql", f"clinic2/{UID}/backup.sql",
    "clinic1/backup.sql",  # the schema alone: a key of the time before identities, or of nobody
    f"clinic1/{OTHER_UID}/backup.sql",  # a deleted tenant's, under the same schema name
])
def test_keys_outside_the_tenant_are_refused(key):
    with pytest.raises(InvalidKey):
        check_tenant_key(key, "clinic1", UID)
