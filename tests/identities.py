"""Fixed identities for the test session's demo tenants, so tests can name their storage keys up front."""

import uuid

TEST_UIDS = {schema: uuid.uuid5(uuid.NAMESPACE_URL, f"tenant-backups-test:{schema}")
             for schema in ("clinica_demo", "clinica_sonrisa", "clinica_norte", "clinica_demo2")}


def prefix(schema: str) -> str:
    """`<schema>/<identity>/`, the key prefix of a demo tenant in the test session."""
    return f"{schema}/{TEST_UIDS[schema]}/"


def give_fixed_identities() -> None:
    """Set the demo tenants' tenant_uid to the fixed ones (right after they are created)."""
    from django_tenants.utils import get_tenant_model

    for schema, uid in TEST_UIDS.items():
        get_tenant_model().objects.filter(schema_name=schema).update(tenant_uid=uid)
