from django.apps import AppConfig


class TasksAdminConfig(AppConfig):
    name = "tasks_admin"
    verbose_name = "Task console"
