"""The worker side: thin Celery tasks, the runner (CheckRun -> check -> evidence), the
reconciler, lens jobs and catalog follow-ups. This is where interp_jobs meets the records."""
