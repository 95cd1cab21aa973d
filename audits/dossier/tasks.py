"""Celery tasks of the dossier export."""
