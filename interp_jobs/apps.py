from django.apps import AppConfig


class InterpJobsConfig(AppConfig):
    name = "interp_jobs"
    verbose_name = "Assay microscope and workers"

    def ready(self) -> None:
        # Registers each check kind's light parameter validators with the record system.
        from interp_jobs import checks

        checks.register_all()
