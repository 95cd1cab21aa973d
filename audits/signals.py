"""Signals other parts of Assay listen to. Sent after the change's transaction commits."""

from django.dispatch import Signal

# A release's gate state changed: sender=Release, release_id, previous, state, reasons.
release_state_changed = Signal()
