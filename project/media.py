"""The demo's S3 media storage: django-storages' S3Storage with one folder per tenant schema, as
TenantFileSystemStorage keeps one directory per schema (MEDIA_STORAGE=s3)."""

from django.conf import settings
from django.db import connection
from storages.backends.s3 import S3Storage


class TenantS3Storage(S3Storage):
    """Objects under `<schema>/` of MEDIA_S3_BUCKET; the location follows the schema Django is connected to."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("bucket_name", settings.MEDIA_S3_BUCKET)
        kwargs.setdefault("endpoint_url", getattr(settings, "AWS_S3_ENDPOINT_URL", None) or None)
        kwargs.setdefault("access_key", getattr(settings, "AWS_ACCESS_KEY_ID", None) or None)
        kwargs.setdefault("secret_key", getattr(settings, "AWS_SECRET_ACCESS_KEY", None) or None)
        kwargs.setdefault("region_name", getattr(settings, "AWS_S3_REGION_NAME", None) or None)
        kwargs.setdefault("addressing_style", "path")
        kwargs.setdefault("file_overwrite", False)
        super().__init__(**kwargs)

    @property
    def location(self) -> str:
        return connection.schema_name

    @location.setter
    def location(self, value) -> None:  # S3Storage's settings set it; the schema decides
        pass
