"""Realistic demo data for a clinic: unicode names, thousands of rows, binary invoices."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import User

from .models import Appointment, Invoice, Note, Patient, Treatment

FIRST = ["José", "María", "Zoë", "Łukasz", "Ñuño", "Ana", "Chloé", "Søren", "李雷", "Иван", "Ayşe", "Björn",
         "François", "Mónica", "Joaquín", "Renée", "Aïcha", "Dvořák", "Sinéad", "Kōji"]
LAST = ["García Núñez", "Pérez", "Muñoz", "O'Brien", "Østergaard", "Fernández", "Çelik", "Schrödinger",
        "Lindqvist", "Ibáñez", "Nguyễn", "Kowalczyk", "Sánchez", "Gómez de la Peña", "Ærøskøbing", "王"]
REASONS = ["Limpieza", "Revisión anual", "Dolor de muela", "Ortodoncia — ajuste", "Endodoncia", "Blanqueamiento",
           "Extracción", "Implante: control", "Urgencia 🦷", "Consulta"]
TREATMENTS = [("LIM01", "Limpieza dental"), ("EMP02", "Empaste composite"), ("END03", "Endodoncia unirradicular"),
              ("EXT04", "Extracción simple"), ("COR05", "Corona de circonio"), ("BLA06", "Blanqueamiento LED")]
NOTES = ["Alérgico a la penicilina.", "Prefiere citas por la mañana.", "Paciente nervioso; anestesia tópica.",
         "", "Diabetes tipo 2 — vigilar cicatrización.", "Habla sólo catalán y francés."]


def fill_clinic(schema: str, *, patients: int = 1500) -> dict[str, int]:
    """Insert staff and clinical data into the current schema; returns rows per model."""
    rng = random.Random(schema)
    base = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    password = make_password("demo-password")
    staff = [
        User(username=f"admin@{schema}", email=f"admin@{schema}.example", nombre="Dra. Núñez", role=User.Role.ADMIN,
             password=password, is_staff=True),
        User(username=f"dentista@{schema}", email=f"dentista@{schema}.example", nombre="Dr. Ibáñez",
             role=User.Role.DENTIST, password=password),
        User(username=f"recepcion@{schema}", email=f"recepcion@{schema}.example", nombre="Zoë Muñoz",
             role=User.Role.RECEPTIONIST, password=password),
    ]
    User.objects.bulk_create(staff)
    people = Patient.objects.bulk_create(
        Patient(
            nombre=rng.choice(FIRST), apellidos=rng.choice(LAST), email=f"paciente{i}@{schema}.example",
            telefono=f"+34 6{rng.randrange(10**7, 10**8)}", notas=rng.choice(NOTES),
            fecha_nacimiento=date(1940, 1, 1) + timedelta(days=rng.randrange(0, 30000)),
        )
        for i in range(patients)
    )
    visits = Appointment.objects.bulk_create(
        Appointment(
            patient=rng.choice(people), starts_at=base + timedelta(minutes=30 * rng.randrange(0, 40000)),
            duration_minutes=rng.choice([15, 30, 45, 60]), motivo=rng.choice(REASONS),
            status=rng.choice(Appointment.Status.values),
        )
        for _ in range(patients * 3)
    )
    treatments = Treatment.objects.bulk_create(
        Treatment(
            patient=visit.patient, appointment=visit, code=code, description=text, tooth=rng.randrange(11, 49),
            price=Decimal(rng.randrange(3000, 90000)) / 100,
        )
        for visit in rng.sample(visits, patients * 2)
        for code, text in [rng.choice(TREATMENTS)]
    )
    invoices = Invoice.objects.bulk_create(
        Invoice(
            patient=rng.choice(people), number=f"{schema.upper()}-{2025}-{i:06d}",
            issued_at=base + timedelta(hours=rng.randrange(0, 16000)), total=Decimal(rng.randrange(3000, 250000)) / 100,
            paid=rng.random() < 0.8, pdf=b"%PDF-1.4\n" + rng.randbytes(rng.randrange(200, 1500)) + b"\x00\xff%%EOF",
        )
        for i in range(patients)
    )
    on_patient, on_visit = ContentType.objects.get_for_model(Patient), ContentType.objects.get_for_model(Appointment)
    notes = Note.objects.bulk_create(
        [Note(content_type=on_patient, object_id=person.pk, text=rng.choice(NOTES) or "Sin novedad.",
              written_at=base + timedelta(hours=rng.randrange(0, 16000))) for person in people[::5]]
        + [Note(content_type=on_visit, object_id=visit.pk, text=f"Nota de la cita: {visit.motivo}",
                written_at=visit.starts_at) for visit in visits[::9]]
    )
    files = add_clinic_files(rng, people, invoices)
    return {"users": len(staff), "patients": len(people), "appointments": len(visits),
            "treatments": len(treatments), "invoices": len(invoices), "notes": len(notes), "files": files}


def add_clinic_files(rng: random.Random, people: list, invoices: list) -> int:
    """X-ray images and invoice PDFs in the clinic's file storage (django-tenants: MEDIA_ROOT/<schema>/), about
    one per twenty patients each; the number written."""
    written = 0
    for patient in people[:: max(1, len(people) // max(3, len(people) // 20))]:
        name = f"xrays/patient-{patient.pk}/panoramic.png"
        body = b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randrange(4000, 40000))
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(body))
            written += 1
    for invoice in invoices[:: max(1, len(invoices) // max(3, len(invoices) // 20))]:
        name = f"invoices/{invoice.number}.pdf"
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(invoice.pdf))
            written += 1
    return written
