"""Create the demo superuser `admin` once, with a random password kept in var/; print the credentials."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from settings.env import var_path

USERNAME = "admin"


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        password_file = var_path("demo-admin-password")
        User = get_user_model()
        user = User.objects.filter(username=USERNAME).first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(USERNAME, "admin@example.com", password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            password_file.write_text(password)
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
        self.stdout.write(
            self.style.SUCCESS(f"Admin: http://127.0.0.1:8000/admin/  user: {USERNAME}  password: {password}")
        )
