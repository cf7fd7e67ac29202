"""The backups dashboard in the Django admin: fleet status, trends per day and per tenant, recent failures.

Served by `BackupRecordAdmin.get_urls()` at `<admin>/backups/backuprecord/dashboard/` (so it needs no URL of
the host project's), behind the admin's login and the view permission on backups. Charts are inline SVG
drawn on the server (`backups.admin.charts`): the page loads nothing but the admin's own CSS.
"""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_tenants.postgresql_backend.base import is_valid_schema_name
from django_tenants.utils import get_tenant_model

from backups.admin import charts
from backups.admin import fleet as dashboard
from backups.admin.formatting import human_bytes, human_duration
from backups.catalog.progress import progress_of
from backups.models import BackupRecord

DEFAULT_DAYS, MAX_DAYS = 14, 90


def _days(request) -> int:
    try:
        return max(1, min(MAX_DAYS, int(request.GET.get("days", DEFAULT_DAYS))))
    except ValueError:
        return DEFAULT_DAYS


def dashboard_view(request, *, model_admin) -> HttpResponse:
    """One page for ops: is the fleet healthy, how does it trend, what failed."""
    schema = (request.GET.get("tenant") or "").strip()
    if schema and not is_valid_schema_name(schema):  # a NUL byte, a quote: no tenant's, and PostgreSQL refuses it
        return HttpResponseBadRequest("?tenant= is not a schema name.", content_type="text/plain")
    now = timezone.now()
    days = _days(request)
    status = dashboard.fleet_status(now=now)
    day_stats = dashboard.fleet_days(days=days, now=now)
    failures_count, failures = dashboard.recent_failures(now=now)
    selected = dashboard.tenant_trend(schema_name=schema, days=days, now=now) if schema else None
    changelist = reverse(f"{model_admin.admin_site.name}:backups_backuprecord_changelist")
    tenant_meta = get_tenant_model()._meta
    try:
        tenants_url = reverse(f"{model_admin.admin_site.name}:{tenant_meta.app_label}_{tenant_meta.model_name}"
                              "_changelist")
    except NoReverseMatch:  # the host project does not register its tenant model in this admin site
        tenants_url = ""

    largest = []
    for trend in dashboard.largest_tenants(days=days, now=now):
        sizes = [p[1] for p in trend.points]
        seconds = [p[2] for p in trend.points]
        largest.append({
            "trend": trend,
            "size": human_bytes(trend.latest_size),
            "duration": human_duration(trend.latest_seconds),
            "size_chart": charts.sparkline(sizes, title=f"{trend.schema_name}: size of {len(sizes)} backups, "
                                           f"last {human_bytes(trend.latest_size)}"),
            "duration_chart": charts.sparkline(seconds, css_class="series-b",
                                               title=f"{trend.schema_name}: duration of {len(seconds)} backups, "
                                               f"last {human_duration(trend.latest_seconds)}"),
        })

    targets = dashboard.newest_targets()
    days_axis = [d.day for d in day_stats]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Backups dashboard",
        "opts": model_admin.model._meta,
        "now": now,
        "days": days,
        "day_choices": (1, 7, 14, 30, 90),
        "status": status,
        "overdue_preview": status.overdue[:20],
        "running": [{"record": r, "progress": progress_of(r, now=now),
                     "elapsed": human_duration((now - r.started_at).total_seconds() if r.started_at else None)}
                    for r in dashboard.running_now()],
        "outcomes_chart": charts.stacked_bars(
            days_axis, [("succeeded", "ok", [d.succeeded for d in day_stats]),
                        ("failed", "bad", [d.failed for d in day_stats])],
            title=f"Backups per day, last {days} days", width=360),
        "bytes_chart": charts.line_chart([(d.day, d.stored_bytes) for d in day_stats], fmt=human_bytes,
                                         title=f"Bytes stored per day, last {days} days", width=360),
        "duration_chart": charts.line_chart([(d.day, d.p95_seconds) for d in day_stats], fmt=human_duration,
                                            css_class="series-b", width=360,
                                            title=f"95th percentile duration per day, last {days} days"),
        "largest": largest,
        "tenant_query": schema,
        "selected": selected,
        "selected_size_chart": selected and charts.line_chart(
            [(p[0], p[1]) for p in selected.points], fmt=human_bytes, title=f"{schema}: size of each backup"),
        "selected_duration_chart": selected and charts.line_chart(
            [(p[0], p[2]) for p in selected.points], fmt=human_duration, css_class="series-b",
            title=f"{schema}: duration of each backup"),
        "failures_count": failures_count,
        "failures": failures,
        "changelist_url": changelist,
        "failed_url": f"{changelist}?status__exact={BackupRecord.Status.FAILED}",
        "tenants_url": tenants_url,
        "overdue_url": tenants_url and f"{tenants_url}?backup_overdue=yes",
        "running_url": f"{changelist}?status__exact={BackupRecord.Status.RUNNING}",
        **targets,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/backups/dashboard.html", context)
