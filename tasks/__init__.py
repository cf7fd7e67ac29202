"""Celery tasks: thin interfaces that load by id and call one service."""
