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
