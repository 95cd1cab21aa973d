from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "audits.operations"
    label = "operations"
    verbose_name = "Assay operations"
    default_auto_field = "django.db.models.BigAutoField"
