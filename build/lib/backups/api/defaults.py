"""The DRF classes every view of the app uses, set on the views so no host REST_FRAMEWORK setting changes them.

DRF's own defaults would leave Basic and Session auth on, render HTML, trust any X-Forwarded-For and answer
errors in other shapes; the app's API promises JSON errors and tenant-bound credentials whatever the host
project configures for its own views.
"""

from __future__ import annotations

from rest_framework.renderers import JSONRenderer

from .authentication import TenantJWTAuthentication, TenantTokenAuthentication
from .exceptions import api_exception_handler
from .parsers import SafeJSONParser
from .throttling import TenantAnonRateThrottle, TenantUserRateThrottle


class ApiDefaults:
    """Mixed into every APIView of the app (before APIView)."""

    authentication_classes = (TenantJWTAuthentication, TenantTokenAuthentication)
    renderer_classes = (JSONRenderer,)
    parser_classes = (SafeJSONParser,)
    throttle_classes = (TenantAnonRateThrottle, TenantUserRateThrottle)

    def get_exception_handler(self):
        return api_exception_handler
