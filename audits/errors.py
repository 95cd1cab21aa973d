"""The errors of state-changing actions. A leaf module (it imports nothing of audits), so
queries, statement rules and actions can all raise them without importing each other."""


class ActionError(Exception):
    """A request that the current state of the records does not allow; the message says why."""


class ConflictError(ActionError):
    """The records changed or are in a state that does not allow this (HTTP 409)."""


class ForbiddenError(ActionError):
    """The person may not do this (four-eyes rules, someone else's key, a revoked key)."""
