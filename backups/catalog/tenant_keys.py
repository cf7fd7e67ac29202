"""Envelope encryption: a random data key per tenant identity, so that destroying it erases every copy.

With BACKUPS_AGE_RECIPIENTS set, a tenant's backups are age-encrypted to the tenant's own data key (a random age
X25519 identity), never to the deployment's recipients directly. The data key's secret half is kept only wrapped
(age-encrypted to the deployment's recipients): in the catalog (TenantKey) and beside the objects, in every
target (`_keys/<tenant_uid>/<key_id>.age`), so an empty database plus a bucket plus the deployment's identity
still restores. A restore unwraps it with BACKUPS_AGE_IDENTITY_FILE, then decrypts.

Erasure destroys the key everywhere: whatever could not be deleted (an object under S3 Object Lock, a copy in a
target that cannot be reached, a copy someone made outside the product and that holds no wrapped key) is left
ciphertext that no key in the deployment opens.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import conf
from backups.conf import backups_settings
from backups.core.encryption import (
    AgeDecryptingReader,
    AgeEncryptor,
    AgeIdentity,
    DecryptionError,
    generate_identity,
    load_identities,
    recipients_fingerprint,
)
from backups.models import BackupRecord, TenantKey
from backups.storage import ObjectNotFound, Storage, StorageError

logger = logging.getLogger(__name__)

KEYS_PREFIX = "_keys/"


def wrapped_key_name(tenant_uid, key_id) -> str:
    """Where the wrapped data key sits beside the objects (outside every tenant's prefix)."""
    return f"{KEYS_PREFIX}{tenant_uid}/{key_id}.age"


def _wrap(secret: str) -> bytes:
    encryptor = AgeEncryptor(conf.age_recipients())
    return encryptor.update(secret.encode("ascii")) + encryptor.finish()


def _wrapped_for() -> str:
    return ",".join(sorted(recipients_fingerprint(conf.age_recipients())))


def _live(tenant_uid):
    return TenantKey.objects.filter(tenant_uid=tenant_uid, destroyed_at__isnull=True, retired_at__isnull=True)


def _store(key: TenantKey, wrapped: bytes, storages: list[Storage]) -> None:
    for storage in storages:  # never locked: an erasure must be able to delete it
        name = wrapped_key_name(key.tenant_uid, key.key_id)
        storage.delete(name)  # a key wrapped again replaces its old wrapping (local storage never overwrites)
        storage.put_bytes(name, wrapped)


def _rewrapped(key: TenantKey, storages: list[Storage]) -> bool:
    """Wrap the live key again for the current recipients (they changed); False when this process cannot
    unwrap it (the old identity is not in BACKUPS_AGE_IDENTITY_FILE): the caller retires it."""
    try:
        secret = AgeDecryptingReader(io.BytesIO(base64.b64decode(key.wrapped)),
                                     _deployment_identities()).read().decode("ascii")
    except (DecryptionError, ValueError, OSError) as exc:
        logger.warning("data key %s of %s cannot be wrapped for the new recipients (%s); a new key takes over",
                       key.key_id, key.schema_name, exc)
        return False
    wrapped = _wrap(secret)
    key.wrapped, key.wrapped_for = base64.b64encode(wrapped).decode("ascii"), _wrapped_for()
    key.save(update_fields=["wrapped", "wrapped_for"])
    _store(key, wrapped, storages)
    return True


def tenant_key_for(*, record: BackupRecord, storages: list[Storage]) -> TenantKey:
    """The live data key of the record's tenant identity, made (and stored beside the objects in `storages`)
    the first time the identity is backed up with encryption. When BACKUPS_AGE_RECIPIENTS changed since, the key
    is wrapped again for the new recipients, or (when this process cannot unwrap it) retired for a new one."""
    key = _live(record.tenant_uid).first()
    if key is not None:
        if key.wrapped_for == _wrapped_for() or _rewrapped(key, storages):
            return key
        TenantKey.objects.filter(pk=key.pk).update(retired_at=timezone.now())
    secret, public = generate_identity()
    wrapped = _wrap(secret)
    try:
        with transaction.atomic():
            key = TenantKey.objects.create(tenant_uid=record.tenant_uid, schema_name=record.schema_name,
                                           recipient=public, wrapped=base64.b64encode(wrapped).decode("ascii"),
                                           wrapped_for=_wrapped_for())
    except IntegrityError:  # another backup of the identity made one first: use it
        return _live(record.tenant_uid).get()
    _store(key, wrapped, storages)
    return key


def tenant_key_store(*, record: BackupRecord, storage: Storage) -> None:
    """Put the record's wrapped data key beside the objects in `storage` (the copy target) if it is not there."""
    encryption = (record.manifest or {}).get("encryption") or {}
    key_id = encryption.get("key_id") if isinstance(encryption, dict) else None
    if not key_id:
        return
    key = TenantKey.objects.filter(key_id=key_id, destroyed_at__isnull=True).exclude(wrapped="").first()  # or retired
    name = wrapped_key_name(record.tenant_uid, key_id)
    if key is not None and storage.stat(name) is None:
        storage.put_bytes(name, base64.b64decode(key.wrapped))


def envelope_manifest(key: TenantKey) -> dict:
    """What a backup's manifest says of its encryption."""
    return {"method": "age", "envelope": "tenant-key", "key_id": str(key.key_id), "recipient": key.recipient}


def _deployment_identities() -> list[AgeIdentity]:
    return load_identities(backups_settings.BACKUPS_AGE_IDENTITY_FILE)


def identities_for(record: BackupRecord, *, storages: list[Storage] = ()) -> list[AgeIdentity]:
    """The identities that open the record's object: its tenant's unwrapped data key (from the catalog, else the
    wrapped copy beside the objects in `storages`), plus the deployment's (backups made before data keys)."""
    deployment = _deployment_identities()
    encryption = (record.manifest or {}).get("encryption") or {}
    key_id = encryption.get("key_id") if isinstance(encryption, dict) else None
    if not key_id:
        return deployment
    key = TenantKey.objects.filter(key_id=key_id).first()
    if key is not None and key.destroyed_at is not None:
        raise DecryptionError(f"The data key of backup {record.pk} (tenant {record.schema_name}) was destroyed on "
                              f"{key.destroyed_at:%Y-%m-%d %H:%M} UTC by an erasure; the backup can never be read "
                              "again.")
    wrapped = base64.b64decode(key.wrapped) if key is not None and key.wrapped else None
    for storage in storages if wrapped is None else ():
        try:
            wrapped = storage.get_bytes(wrapped_key_name(record.tenant_uid, key_id))
            break
        except (ObjectNotFound, StorageError):
            continue
    if wrapped is None:
        raise DecryptionError(f"The data key {key_id} of backup {record.pk} is in neither the catalog nor beside "
                              "the objects (erased, or lost with the database); the backup cannot be decrypted.")
    try:
        secret = AgeDecryptingReader(io.BytesIO(wrapped), deployment).read().decode("ascii")
    except DecryptionError as exc:
        raise DecryptionError(f"The data key {key_id} of backup {record.pk} cannot be unwrapped with the identities "
                              f"in BACKUPS_AGE_IDENTITY_FILE ({exc}); the backup cannot be decrypted.") from None
    identity = AgeIdentity.from_string(secret)
    if identity is None or identity.recipient != (key.recipient if key else identity.recipient):
        raise DecryptionError(f"The data key {key_id} of backup {record.pk} unwrapped to something that is not its "
                              "key: it was tampered with.")
    return [identity, *deployment]


@dataclass
class KeyDestruction:
    """Where the data keys were destroyed, and where a wrapped copy could not be deleted (it still opens them)."""

    keys: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # "<target>: <key name>: why"


def tenant_keys_destroy(*, tenant_uid, storages: dict[str, Storage]) -> KeyDestruction:
    """Delete every wrapped data key of the identity beside the objects in `storages` ({name: storage}), then
    in the catalog. A copy that could not be deleted is listed: run the erasure again once it can be."""
    result = KeyDestruction()
    for name, storage in storages.items():
        try:
            for obj in storage.list(f"{KEYS_PREFIX}{tenant_uid}/"):
                try:
                    storage.delete(obj.key)
                except StorageError as exc:
                    result.left.append(f"{name}: {obj.key}: {exc}")
        except StorageError as exc:
            result.left.append(f"{name}: {KEYS_PREFIX}{tenant_uid}/: {exc}")
    for key in TenantKey.objects.filter(tenant_uid=tenant_uid, destroyed_at__isnull=True):  # retired ones too
        key.wrapped, key.destroyed_at = "", timezone.now()
        key.save(update_fields=["wrapped", "destroyed_at"])
        result.keys.append(str(key.key_id))
    return result
