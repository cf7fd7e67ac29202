"""The backups API, mounted at /api/backups/ on tenant domains (never on the public one)."""

from django.urls import path

from backups.api import schema  # noqa: F401 - registers the OpenAPI auth extension

from .compat import with_compat_views
from .views.audit import AuditListView
from .views.cloud import CloudDeleteView, CloudDownloadView, CloudListView, CloudUrlView
from .views.create import BackupCreateView
from .views.history import HistoryDetailView, HistoryDownloadView, HistoryFilesView, HistoryListView
from .views.local_download import LocalDownloadView
from .views.restore import RestoreJobDetailView, RestoreView, VerifyView
from .views.restore_objects import RestoreObjectsView
from .views.schedule import ScheduleView

app_name = "backups_api"

# Ids are taken as strings and checked in the view, so a malformed one gets the API's JSON 404.
urlpatterns = [
    path("create/", BackupCreateView.as_view(), name="create"),
    path("history/", HistoryListView.as_view(), name="history-list"),
    path("history/<str:record_id>/", HistoryDetailView.as_view(), name="history-detail"),
    path("history/<str:record_id>/download/", HistoryDownloadView.as_view(), name="history-download"),
    path("history/<str:record_id>/files/", HistoryFilesView.as_view(), name="history-files"),
    path("history/<str:record_id>/restore/", RestoreView.as_view(), name="history-restore"),
    path("history/<str:record_id>/verify/", VerifyView.as_view(), name="history-verify"),
    path("history/<str:record_id>/restore-objects/", RestoreObjectsView.as_view(), name="history-restore-objects"),
    path("restores/<str:job_id>/", RestoreJobDetailView.as_view(), name="restore-detail"),
    path("cloud/list/", CloudListView.as_view(), name="cloud-list"),
    path("cloud/download/", CloudDownloadView.as_view(), name="cloud-download"),
    path("cloud/delete/", CloudDeleteView.as_view(), name="cloud-delete"),
    path("cloud/get-url/", CloudUrlView.as_view(), name="cloud-get-url"),
    path("schedule/", ScheduleView.as_view(), name="schedule"),
    path("audit/", AuditListView.as_view(), name="audit"),
    path("local-download/<str:token>/", LocalDownloadView.as_view(), name="local-download"),
]
urlpatterns = with_compat_views(urlpatterns)  # BACKUPS_API_COMPAT: the source documents' answers (backups.api.compat)
