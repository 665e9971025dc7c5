"""What the task console takes out of the project's admin site."""

from django.contrib import admin
from django_celery_results.models import TaskResult

# Tasks (tasks_admin) lists every task with its result; the stock Task results list duplicates it
# and is the slow page over a large history (the admin benchmark still times it, on its own site).
admin.site.unregister(TaskResult)
