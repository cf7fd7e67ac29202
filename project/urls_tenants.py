"""URLs served on each tenant's own domain."""

urlpatterns: list = []
