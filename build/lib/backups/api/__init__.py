"""The backups REST API (DRF): one view per operation, served under /api/backups/ on tenant domains."""
