"""Who is making the change in progress: the signed-in person of the current request (set by
ActorMiddleware, or by an API view once DRF has authenticated), or nobody (shell, worker).

Account changes are recorded from model signals (the admin, the shell and createsuperuser all
change users directly); the signal handlers read the actor from here."""

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_actor: ContextVar[Any] = ContextVar("assay_actor", default=None)


def current():
    """The acting user, or None. A request's user is resolved only when asked for."""
    value = _actor.get()
    user = value() if callable(value) else value
    return user if user is not None and getattr(user, "is_authenticated", False) else None


@contextmanager
def acting_as(user_or_resolver):
    token = _actor.set(user_or_resolver)
    try:
        yield
    finally:
        _actor.reset(token)
