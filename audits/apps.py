from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_triggers(sender, using, **kwargs) -> None:
    """Every migrate ends with the triggers of the current schema in place: on SQLite a
    migration that alters a protected table rebuilds it and drops its triggers."""
    from django.db import connections

    from audits import triggers

    connection = connections[using]
    if connection.vendor not in ("postgresql", "sqlite"):
        return
    with connection.cursor() as cursor:
        for statement in triggers.create_statements(connection.vendor):
            cursor.execute(statement)


class AuditsConfig(AppConfig):
    name = "audits"
    verbose_name = "Assay records"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audits import account_signals

        account_signals.connect()
        post_migrate.connect(_install_triggers, sender=self, dispatch_uid="assay_triggers")
