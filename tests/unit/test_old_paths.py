"""Paths host projects configured before the stage folders (issue 23) still answer, for one release."""

import importlib

import pytest
from kombu.utils.imports import symbol_by_name

OLD_PATHS = [
    ("backups.redis_transport", "backups.ops.redis_transport", ["Transport", "Channel"]),
    ("backups.ops_urls", "backups.ops.urls", ["urlpatterns", "app_name"]),
    ("backups.mixins", "backups.schedule.mixins", ["TenantBackupScheduleMixin"]),
    ("backups.middleware", "backups.ops.middleware", ["HealthProbeMiddleware"]),
    ("backups.observability", "backups.ops.observability", ["logging_config", "sentry_init", "RedactSignedLinks"]),
    ("backups.api.auth", "backups.api.auth_urls", ["urlpatterns"]),
]


@pytest.mark.parametrize(("old", "new", "names"), OLD_PATHS)
def test_an_old_path_hands_on_the_new_modules_objects(old, new, names):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name), name


def test_the_old_broker_transport_string_still_loads_the_fixed_transport():
    from backups.ops.redis_transport import Transport

    assert symbol_by_name("backups.redis_transport:Transport") is Transport
