"""backups.conf.backups_settings: one object for the app's settings, read by attribute."""

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backups import conf
from backups.api.roles import is_tenant_admin
from backups.conf import DEFAULTS, backups_settings


def test_an_unknown_setting_raises_naming_it():
    with pytest.raises(AttributeError, match=r"unknown tenant-backups setting 'BACKUPS_STORAGEE'"):
        backups_settings.BACKUPS_STORAGEE  # noqa: B018
    with pytest.raises(AttributeError, match="BACKUPS_NO_SUCH_THING"):
        backups_settings.BACKUPS_NO_SUCH_THING  # noqa: B018
    assert not hasattr(backups_settings, "BACKUPS_TYPO")


def test_every_default_is_readable_and_listed():
    for name in DEFAULTS:
        getattr(backups_settings, name)
    assert set(DEFAULTS) <= set(dir(backups_settings))


def test_a_missing_setting_reads_its_default(settings):
    del settings.BACKUPS_BATCH_MIN_SIZE
    del settings.BACKUPS_API_COMPAT_HISTORY_LIMIT
    assert backups_settings.BACKUPS_BATCH_MIN_SIZE == DEFAULTS["BACKUPS_BATCH_MIN_SIZE"]
    assert backups_settings.BACKUPS_API_COMPAT_HISTORY_LIMIT == 100


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("BACKUPS_BATCH_SIZE", "250", 250),
    ("BACKUPS_BATCH_SIZE", " 7 ", 7),
    ("BACKUPS_BATCH_SIZE", 12.0, 12),
    ("BACKUPS_BATCH_LOCK_SHARE", "0.25", 0.25),
    ("BACKUPS_BATCH_LOCK_SHARE", 1, 1.0),
    ("BACKUPS_API_COMPAT", "true", True),
    ("BACKUPS_API_COMPAT", "0", False),
    ("BACKUPS_RESTORE_PRIVILEGES", "off", False),
    ("BACKUPS_RESTORE_PRIVILEGES", "Yes", True),
    ("BACKUPS_MANIFEST_OLD_KEYS", "key-one, key-two,", ("key-one", "key-two")),
    ("BACKUPS_MANIFEST_OLD_KEYS", ["key-one"], ("key-one",)),
    ("BACKUPS_JSON_EXCLUDE", "", ()),
    ("BACKUPS_API_THROTTLE_RATES", '{"anon": "1/min"}', {"anon": "1/min"}),
    ("BACKUPS_TENANT_LOCK_WAIT_SECONDS", 0.5, 0.5),  # durations: a float stays a float
    ("BACKUPS_TENANT_LOCK_WAIT_SECONDS", "0.5", 0.5),
    ("BACKUPS_DUMP_SLOT_WAIT_SECONDS", "600", 600),
    ("BACKUPS_HEALTH_TIMEOUT_SECONDS", "3", 3),
    ("BACKUPS_MANUAL_RETENTION_DAYS", "30", 30),  # nullable ints
    ("BACKUPS_MANUAL_RETENTION_DAYS", "", None),
    ("BACKUPS_MANUAL_RETENTION_DAYS", None, None),
    ("BACKUPS_PRE_RESTORE_RETENTION_DAYS", "none", None),
    ("BACKUPS_PRE_RESTORE_RETENTION_DAYS", "14", 14),
    ("BACKUPS_METRICS_TOKEN", None, ""),
    ("BACKUPS_LOCAL_ROOT", Path("/srv/backups"), "/srv/backups"),
])
def test_a_string_from_the_environment_reads_as_the_settings_type(settings, name, raw, expected):
    setattr(settings, name, raw)
    value = getattr(backups_settings, name)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("name", "raw"), [
    ("BACKUPS_BATCH_SIZE", "five hundred"),
    ("BACKUPS_BATCH_SIZE", 2.5),
    ("BACKUPS_API_COMPAT", "maybe"),
    ("BACKUPS_BATCH_LOCK_SHARE", "half"),
    ("BACKUPS_DRILL_SAMPLE", ""),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_setting(settings, name, raw):
    setattr(settings, name, raw)
    with pytest.raises(ImproperlyConfigured, match=name):
        getattr(backups_settings, name)


def test_a_changed_setting_is_read_at_once(settings):
    settings.BACKUPS_BATCH_SIZE = "40"
    assert backups_settings.BACKUPS_BATCH_SIZE == 40
    settings.BACKUPS_BATCH_SIZE = "41"  # setting_changed: the converted value is forgotten
    assert backups_settings.BACKUPS_BATCH_SIZE == 41
    del settings.BACKUPS_BATCH_SIZE
    assert backups_settings.BACKUPS_BATCH_SIZE == DEFAULTS["BACKUPS_BATCH_SIZE"]


def test_reload_forgets_converted_values(settings):
    settings.BACKUPS_IS_TENANT_ADMIN = "backups.api.roles.is_tenant_admin"
    first = backups_settings.BACKUPS_IS_TENANT_ADMIN
    assert "BACKUPS_IS_TENANT_ADMIN" in backups_settings._cache
    backups_settings.reload()
    assert backups_settings._cache == {}
    assert backups_settings.BACKUPS_IS_TENANT_ADMIN is first


def test_an_import_string_reads_as_the_object_it_names(settings):
    settings.BACKUPS_IS_TENANT_ADMIN = "backups.api.roles.is_tenant_admin"
    assert backups_settings.BACKUPS_IS_TENANT_ADMIN is is_tenant_admin

    def custom(user, tenant):
        return True

    settings.BACKUPS_IS_TENANT_ADMIN = custom  # the object itself is taken as it is
    assert backups_settings.BACKUPS_IS_TENANT_ADMIN is custom

    settings.BACKUPS_IS_TENANT_ADMIN = "backups.api.roles.no_such_check"
    with pytest.raises(ImportError, match="BACKUPS_IS_TENANT_ADMIN"):
        backups_settings.BACKUPS_IS_TENANT_ADMIN  # noqa: B018


def test_conf_get_is_a_deprecated_alias(settings):
    settings.BACKUPS_BATCH_SIZE = 7
    with pytest.deprecated_call():
        assert conf.get("BACKUPS_BATCH_SIZE") == 7
    with pytest.deprecated_call(), pytest.raises(KeyError):
        conf.get("BACKUPS_NO_SUCH_THING")
