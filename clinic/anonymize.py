"""The demo's clone anonymizer (BACKUPS_CLONE_ANONYMIZER): a clone for staging or support keeps every visit,
treatment and invoice but no patient's name, e-mail or phone."""

from __future__ import annotations

from typing import Any

from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat

from .models import Patient


def scrub_patients(*, schema: str, **kwargs: Any) -> int:
    """Replace every patient's names, e-mail and phone in the current schema (the clone's); returns how many.

    Names become "Paciente <id>", e-mails `paciente-<id>@example.invalid` (a domain that never delivers), phones
    empty. Runs inside the clone's transaction: if it raises, no clone is made."""
    key = Cast("pk", output_field=CharField())
    return Patient.objects.update(
        nombre="Paciente", apellidos=key,
        email=Concat(Value("paciente-"), key, Value("@example.invalid"), output_field=CharField()),
        telefono="",
    )
