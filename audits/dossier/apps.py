from django.apps import AppConfig


class DossierConfig(AppConfig):
    name = "audits.dossier"
    label = "dossier"
    verbose_name = "Assay audit dossiers"
    default_auto_field = "django.db.models.BigAutoField"
