"""Install the default periodic task schedules that are missing; never change existing ones."""

from django.core.management.base import BaseCommand

from tasks_admin.periodic import install_default_schedules


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        for name, created in install_default_schedules():
            if created:
                self.stdout.write(self.style.SUCCESS(f"Created periodic task: {name}"))
            else:
                self.stdout.write(f"Kept periodic task as it is: {name}")
