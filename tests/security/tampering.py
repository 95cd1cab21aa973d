"""What an insider with database access can do, for the attack tests: change rows behind the
application's back (triggers lifted, as a database superuser can), and ask verify_ledger."""

import hashlib
import io
import json
from contextlib import contextmanager

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audits import ledger, merkle, triggers
from audits.models import AuditEvent, LedgerHead


@contextmanager
def triggers_bypassed():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        else:
            for statement in triggers.drop_statements("sqlite"):
                cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")
            else:
                for statement in triggers.create_statements("sqlite"):
                    cursor.execute(statement)


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def db_id(value) -> str:
    """A UUID primary key as the database stores it."""
    return value.hex if connection.vendor == "sqlite" else str(value)


def verify(*args: str) -> str:
    """verify_ledger's verdict: "ok", or its error message (every problem, joined)."""
    err = io.StringIO()
    try:
        call_command("verify_ledger", "--no-sign", *args, stdout=io.StringIO(), stderr=err)
    except CommandError as exc:
        return f"{exc}\n{err.getvalue()}"
    return "ok"


def rewrite_from(seq: int, new_data) -> None:
    """Rewrite event seq's data and every hash, chain link, stored byte and Merkle node from
    there on, as a careful forger would: only checkpoints held elsewhere can still tell."""
    events = list(AuditEvent.objects.order_by("seq"))
    previous = ledger.GENESIS
    sql("DELETE FROM audits_merklenode")
    frontier: list = []
    for event in events:
        if event.seq >= seq:
            if event.seq == seq:
                event.data = new_data(event)
            event.prev_hash = previous
            event.body = ledger.event_bytes(event).decode()
            event.entry_hash = hashlib.sha256(event.body.encode()).hexdigest()
            sql(
                "UPDATE audits_auditevent SET data = %s, prev_hash = %s, entry_hash = %s, "
                "body = %s WHERE seq = %s",
                [json.dumps(event.data), event.prev_hash, event.entry_hash, event.body, event.seq],
            )
        previous = event.entry_hash
        leaf = merkle.leaf_hash(event.body.encode())
        frontier = ledger._append_leaf(event.seq - 1, leaf, frontier)
    LedgerHead.objects.filter(pk=1).update(head_hash=previous, frontier=frontier)
