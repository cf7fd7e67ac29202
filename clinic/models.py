"""A dental clinic's records: the data a tenant backup must carry intact."""

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Patient(models.Model):
    """A patient of the clinic."""

    nombre = models.CharField("first name", max_length=100)
    apellidos = models.CharField("last names", max_length=150)
    email = models.EmailField("email", blank=True)
    telefono = models.CharField("phone", max_length=30, blank=True)
    fecha_nacimiento = models.DateField("birth date", null=True)
    notas = models.TextField("notes", blank=True)
    created_at = models.DateTimeField("created at", auto_now_add=True)
    clinical_notes = GenericRelation("Note", related_query_name="patient")

    def __str__(self) -> str:
        return f"{self.nombre} {self.apellidos}"


class Appointment(models.Model):
    """A booked visit."""

    class Status(models.TextChoices):
        BOOKED = "booked", "Booked"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="appointments")
    starts_at = models.DateTimeField("starts at")
    duration_minutes = models.PositiveSmallIntegerField("duration (minutes)", default=30)
    motivo = models.CharField("reason", max_length=200)
    status = models.CharField("status", max_length=12, choices=Status.choices, default=Status.BOOKED)
    clinical_notes = GenericRelation("Note", related_query_name="appointment")


class Treatment(models.Model):
    """A procedure done to a patient."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="treatments")
    appointment = models.ForeignKey(Appointment, null=True, on_delete=models.SET_NULL, related_name="treatments")
    code = models.CharField("code", max_length=20)
    description = models.CharField("description", max_length=300)
    tooth = models.PositiveSmallIntegerField("tooth", null=True)
    price = models.DecimalField("price", max_digits=10, decimal_places=2)


class Invoice(models.Model):
    """A bill, with its PDF kept as bytes."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField("number", max_length=30, unique=True)
    issued_at = models.DateTimeField("issued at")
    total = models.DecimalField("total", max_digits=12, decimal_places=2)
    paid = models.BooleanField("paid", default=False)
    pdf = models.BinaryField("pdf", blank=True)


class Note(models.Model):
    """A note written on any record of the clinic (a patient, an appointment): a generic relation."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField("object id")
    about = GenericForeignKey("content_type", "object_id")
    text = models.TextField("text")
    written_at = models.DateTimeField("written at")

    class Meta:
        indexes = [models.Index(fields=("content_type", "object_id"), name="clinic_note_object_idx")]
