"""Manifests are believed only with this deployment's signature; old keys still verify after a rotation."""

from backups.catalog.manifest import manifest_signature_valid, sign_manifest

MANIFEST = {"schema": "clinic1", "sha256": "ab" * 32, "size": 10, "row_counts": {"Order Lines": 3}}


def test_a_signed_manifest_verifies_and_any_change_breaks_it(settings):
    settings.BACKUPS_MANIFEST_KEY = "key-one"
    signed = sign_manifest(MANIFEST)
    assert manifest_signature_valid(signed)
    for change in ({"size": 11}, {"sha256": ""}, {"extra": True}):
        assert not manifest_signature_valid({**signed, **change})
    assert not manifest_signature_valid(MANIFEST)  # unsigned
    assert not manifest_signature_valid({**signed, "signature": {"alg": "none"}})
    assert not manifest_signature_valid("not a dict")


def test_rotation_keeps_old_manifests_valid_only_while_their_key_is_listed(settings):
    settings.BACKUPS_MANIFEST_KEY = "key-one"
    old = sign_manifest(MANIFEST)
    settings.BACKUPS_MANIFEST_KEY = "key-two"
    settings.BACKUPS_MANIFEST_OLD_KEYS = ["key-one"]
    assert manifest_signature_valid(old) and manifest_signature_valid(sign_manifest(MANIFEST))
    settings.BACKUPS_MANIFEST_OLD_KEYS = []
    assert not manifest_signature_valid(old)


def test_the_default_key_comes_from_the_secret_key(settings):
    settings.BACKUPS_MANIFEST_KEY = ""
    signed = sign_manifest(MANIFEST)
    assert manifest_signature_valid(signed)
    settings.SECRET_KEY = settings.SECRET_KEY + "-rotated"
    assert not manifest_signature_valid(signed)


class _Bucket:
    """A storage holding some bytes by key (a unit test's stand-in for the untrusted storage)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_bytes(self, key: str) -> bytes:
        from backups.storage import ObjectNotFound, StorageError

        if key not in self.objects:
            raise ObjectNotFound(key)
        if self.objects[key] is None:
            raise StorageError("503 Slow Down")
        return self.objects[key]


def test_the_one_reader_trusts_only_a_signed_manifest_and_says_why_not(settings):
    import json

    from backups.catalog.manifest import manifest_names_record, read_manifest

    settings.BACKUPS_MANIFEST_KEY = "key-one"
    signed = sign_manifest({**MANIFEST, "record_id": 7, "tenant_uid": "u-1"})
    bucket = _Bucket({"ok.manifest.json": json.dumps(signed).encode(),
                      "forged.manifest.json": json.dumps({**signed, "size": 99}).encode(),
                      "junk.manifest.json": b"\xff not json", "flaky.manifest.json": None})
    good = read_manifest(bucket, "ok")
    assert good.manifest == signed and good.problem == "" and good.present
    forged = read_manifest(bucket, "forged")
    assert forged.manifest is None and forged.present and "not signed by this deployment" in forged.problem
    junk = read_manifest(bucket, "junk")
    assert junk.manifest is None and junk.present and "cannot be read" in junk.problem
    for absent in ("missing", "flaky"):
        stored = read_manifest(bucket, absent)
        assert stored.manifest is None and not stored.present and "cannot be read" in stored.problem

    class Record:
        pk, tenant_uid = 7, "u-1"

    assert manifest_names_record(good.manifest, Record)
    Record.pk = 8
    assert not manifest_names_record(good.manifest, Record) and not manifest_names_record(None, Record)
