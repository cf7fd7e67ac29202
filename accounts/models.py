"""Clinic staff: a user model with a role; ADMIN manages the clinic's backups."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A clinic user (in the public schema: an operator)."""

    class Role(models.TextChoices):
        ADMIN = "ADMIN", "Administrator"
        DENTIST = "DENTIST", "Dentist"
        RECEPTIONIST = "RECEPTIONIST", "Receptionist"

    email = models.EmailField("email", unique=True)
    nombre = models.CharField("full name", max_length=200, blank=True)
    role = models.CharField("role", max_length=20, choices=Role.choices, default=Role.RECEPTIONIST)

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        """The clinic's own full-name field (what backups' audit snapshots show as `name`)."""
        return self.nombre or super().get_full_name()
