from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "audits.operations"
    label = "operations"
    verbose_name = "Assay operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver that queues webhook deliveries on release state changes.
        from audits.operations import webhooks  # noqa: F401
