"""Page-number pagination: `count`, `next`, `previous`, `results`; a bad page number is bad input (400)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class BackupsPagination(PageNumberPagination):
    """20 per page by default, `page_size` up to 100."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
            raise ValidationError({self.page_query_param: ["A page number is a whole number from 1."]})
        return int(raw)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
            raise ValidationError({self.page_size_query_param: [f"A page size is a whole number from 1 to "
                                                                 f"{self.max_page_size}."]})
        return super().get_page_size(request)
