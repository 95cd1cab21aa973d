"""The gate's facts kept per process, checked against PostgreSQL on every request.

The gate must show a change made behind the application's back (a database insider who
updates, deletes or inserts a row) at the very next request, so a cache that expires after a
while would not do. Instead each kept `ReleaseFacts` carries a fingerprint of every row version
it was computed from, and each request first asks PostgreSQL for that fingerprint again, in one
query: the same fingerprint means the same rows in the same versions, so the same facts.

Why this is cheap and the facts are not: reading the facts is six ORM queries whose compiling
and model building cost several milliseconds of Python a request (bench/gate_load.py --profile),
while the fingerprint is one fixed SQL string answered from the same indexes with nothing to
build. Nothing is cached on SQLite (no row versions to compare): the facts are read each time.

A row version is (xmin, ctid): xmin, the transaction that wrote it, changes with every UPDATE
or re-INSERT by a later transaction; ctid, its place in the table, changes with every UPDATE,
even inside one transaction. A deleted or inserted row leaves or joins the fingerprinted set.
Facts are kept only when they and their fingerprint were read in one snapshot of committed
rows, so a match means the very rows they were computed from. Entries older than
MAX_AGE_SECONDS are read again: a 32-bit xmin repeats only after 2**32 transactions, far more
than fit in that time.
"""

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from audits import gate, queries
from audits.models import (
    AuditEvent,
    CheckPolicy,
    CheckRun,
    Decision,
    ModelVersion,
    Release,
    RequiredCheck,
    ReviewerKey,
)

MAX_AGE_SECONDS = 3600.0
MAX_ENTRIES = 1024  # releases a web process keeps; a pipeline polls a handful at a time


@dataclass(frozen=True)
class _Entry:
    fingerprint: str
    release: Release
    facts: gate.ReleaseFacts
    stored_at: float


_entries: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
_lock = threading.Lock()  # gunicorn's sync workers are single-threaded; threaded servers are not


def release_facts(
    release_id, read_release: Callable[[], Release]
) -> tuple[Release, gate.ReleaseFacts]:
    """The release (with its model version and policy) and its gate facts, as the database
    holds them now. `read_release` reads the release (answering 404 if there is none); it is
    called only when the kept facts cannot be used."""
    key = _as_uuid(release_id)
    if key is None or connection.vendor != "postgresql":  # SQLite keeps no row versions
        return _read_fresh(read_release)
    if not connection.in_atomic_block and not _is_kept(key):
        return _read_and_keep(key, read_release)  # nothing to compare: read and keep at once
    mark = fingerprint(key)
    if mark is None:  # no such release
        return _read_fresh(read_release)
    kept = _lookup(key, mark)
    if kept is not None:
        return kept.release, kept.facts
    if connection.in_atomic_block:
        # In a caller's transaction each statement may see a different moment: read the facts
        # fresh and keep nothing (the gate endpoint runs in autocommit and keeps).
        return _read_fresh(read_release)
    return _read_and_keep(key, read_release)


def _read_fresh(read_release: Callable[[], Release]) -> tuple[Release, gate.ReleaseFacts]:
    release = read_release()
    return release, queries.gate_facts(release)


def _read_and_keep(
    key: uuid.UUID, read_release: Callable[[], Release]
) -> tuple[Release, gate.ReleaseFacts]:
    """Read the fingerprint and the facts in one snapshot, and keep them. Read at different
    moments, a row inserted and deleted again in between would leave the facts saying what no
    row says any more under a fingerprint that matches the rows again."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        mark = fingerprint(key)
        release = read_release()  # 404 if the release is gone since
        facts = queries.gate_facts(release)
    if mark is not None:
        _store(key, _Entry(mark, release, facts, time.monotonic()))
    return release, facts


def _as_uuid(value) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None  # read_release answers 404


def _is_kept(key: uuid.UUID) -> bool:
    with _lock:
        return key in _entries


def _lookup(key: uuid.UUID, mark: str) -> _Entry | None:
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            return None
        if entry.fingerprint != mark or time.monotonic() - entry.stored_at > MAX_AGE_SECONDS:
            del _entries[key]
            return None
        _entries.move_to_end(key)
        return entry


def _store(key: uuid.UUID, entry: _Entry) -> None:
    # Two requests that missed together may both store; either entry is right for its own
    # fingerprint, and every later request compares that fingerprint before using it.
    with _lock:
        _entries[key] = entry
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def forget_all() -> None:
    """Drop every kept entry (tests that compare a cold and a warm request start cold)."""
    with _lock:
        _entries.clear()


def fingerprint(release_id: uuid.UUID) -> str | None:
    """sha256 over the versions of every row the gate's answer is computed from; None when
    there is no such release, or when the database keeps no row versions (SQLite)."""
    if connection.vendor != "postgresql":
        return None
    connection.close_if_health_check_failed()  # what Django's connection.cursor() does first
    connection.ensure_connection()
    params = {"release": release_id, "target": str(release_id)}
    with _prepared_statements(), _server_bound_cursor() as cursor:
        cursor.execute(_fingerprint_sql(), params)
        exists, digest = cursor.fetchone()
    return digest if exists else None


@contextmanager
def _prepared_statements():
    """Let psycopg prepare what runs inside (Django turns preparing off for the connection, for
    connection poolers' sake): planning the fingerprint's dozen subqueries takes PostgreSQL
    longer than running them, so each connection plans it once. psycopg forgets its prepared
    statements on a rollback and prepares again. (Behind PgBouncer in transaction mode,
    prepared statements need PgBouncer 1.21 or later.)"""
    raw = connection.connection
    saved = raw.prepare_threshold
    if saved is None:
        raw.prepare_threshold = 0  # prepare on the first execution
    try:
        yield
    finally:
        raw.prepare_threshold = saved


def _server_bound_cursor():
    """A Django cursor, so that query logging, counting and execute wrappers see the query,
    over a psycopg cursor that binds parameters on the server: Django's own cursors bind on the
    client, and a query with its values spelled in cannot be prepared once for all releases."""
    import psycopg  # only on PostgreSQL: an embedded (SQLite) install need not have it

    raw = psycopg.Cursor(connection.connection)
    # django-stubs type these as taking Django's wrapper; Django passes them the driver's cursor.
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)  # type: ignore[arg-type]
    return connection.make_cursor(raw)  # type: ignore[arg-type]


# Every row queries.gate_facts and the gate view read, each as (tag, id, xmin, ctid), written
# as a row literal so that no id (a reviewer's key id is free text) can pass for two fields: the
# release, its model version and policy; its check runs and their required checks; its
# decisions, their keys, reviewers, the reviewers' group memberships and groups; the release's
# release.opened event (which bounds the account events read, so a change to it shows in their
# set too) and the ledger events gate_facts selects, with the same predicates.
_FINGERPRINT_TEMPLATE = """
WITH release AS (
    SELECT id, model_version_id, policy_id, xmin, ctid FROM {release} WHERE id = %(release)s
), runs AS (
    SELECT id, required_check_id, xmin, ctid FROM {run} WHERE release_id = %(release)s
), decisions AS (
    SELECT id, reviewer_id, key_id, xmin, ctid FROM {decision} WHERE release_id = %(release)s
), memberships AS (
    SELECT id, group_id, xmin, ctid FROM {membership}
    WHERE {member_column} IN (SELECT reviewer_id FROM decisions)
), opened AS (
    SELECT seq, xmin, ctid FROM {event}
    WHERE verb = '{opened_verb}' AND target_id = %(target)s ORDER BY seq LIMIT 1
), versions (tag, id, xmin, ctid) AS (
    SELECT 'release', id::text, xmin, ctid FROM release
    UNION ALL SELECT 'model', id::text, xmin, ctid FROM {model}
        WHERE id IN (SELECT model_version_id FROM release)
    UNION ALL SELECT 'policy', id::text, xmin, ctid FROM {policy}
        WHERE id IN (SELECT policy_id FROM release)
    UNION ALL SELECT 'run', id::text, xmin, ctid FROM runs
    UNION ALL SELECT 'check', id::text, xmin, ctid FROM {check}
        WHERE id IN (SELECT required_check_id FROM runs)
    UNION ALL SELECT 'decision', id::text, xmin, ctid FROM decisions
    UNION ALL SELECT 'key', key_id::text, xmin, ctid FROM {key}
        WHERE key_id IN (SELECT key_id FROM decisions)
    UNION ALL SELECT 'user', id::text, xmin, ctid FROM {user}
        WHERE id IN (SELECT reviewer_id FROM decisions)
    UNION ALL SELECT 'member', id::text, xmin, ctid FROM memberships
    UNION ALL SELECT 'group', id::text, xmin, ctid FROM {group}
        WHERE id IN (SELECT group_id FROM memberships)
    UNION ALL SELECT 'opened', seq::text, xmin, ctid FROM opened
    UNION ALL SELECT 'event', seq::text, xmin, ctid FROM {event}
        WHERE (verb = '{decision_verb}' AND (
                target_id IN (SELECT id::text FROM decisions)
                OR data -> 'release' = to_jsonb(%(target)s::text)))
           OR (verb IN ({account_verbs}) AND target_type = 'user'
               AND target_id IN (SELECT reviewer_id::text FROM decisions)
               AND seq > (SELECT seq FROM opened))
)
SELECT EXISTS (SELECT 1 FROM release),
       encode(sha256(convert_to(
           string_agg(ROW(tag, id, xmin, ctid)::text, ',' ORDER BY tag, id, ctid),
           'UTF8')), 'hex')
FROM versions
"""


@cache
def _fingerprint_sql() -> str:
    user = get_user_model()
    membership = user.groups.through
    return _FINGERPRINT_TEMPLATE.format(
        release=Release._meta.db_table,
        run=CheckRun._meta.db_table,
        decision=Decision._meta.db_table,
        membership=membership._meta.db_table,
        member_column=next(
            field.column
            for field in membership._meta.concrete_fields
            if field.related_model is user
        ),
        event=AuditEvent._meta.db_table,
        model=ModelVersion._meta.db_table,
        policy=CheckPolicy._meta.db_table,
        check=RequiredCheck._meta.db_table,
        key=ReviewerKey._meta.db_table,
        user=user._meta.db_table,
        group=user.groups.field.related_model._meta.db_table,
        opened_verb=queries.RELEASE_OPENED,
        decision_verb=queries.DECISION_RECORDED,
        account_verbs=", ".join(f"'{verb}'" for verb in queries.ACCOUNT_VERBS),
    )
