"""Database triggers that refuse changes to what must not change once written.

- Append-only tables (the ledger, its Merkle nodes and checkpoints, decisions, evidence): no
  UPDATE or DELETE at all.
- A finished check run (succeeded, errored, cancelled): no UPDATE or DELETE.
- A published policy and its required checks: no UPDATE or DELETE, and no new required check.

The models refuse such changes too; the triggers also stop anyone who reaches the database
directly. Whoever can drop a trigger can still get around them: that is what verify_ledger
(audits.verification) is for, and the threat model (docs/threat-model.md) says which is which.
"""

# The append-only tables of the first migration (0002); later migrations add to these lists,
# and each migration installs only what it introduced.
APPEND_ONLY_V1 = (
    "audits_auditevent",
    "audits_decision",
    "audits_evidence",
    "audits_ledgercheckpoint",
)
APPEND_ONLY_V2 = ("audits_merklenode",)
PROTECTED_TABLES = APPEND_ONLY_V1 + APPEND_ONLY_V2
FINISHED = "('succeeded', 'errored', 'cancelled')"

_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION assay_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'assay: % on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""

_PG_FINISHED_RUN = f"""
CREATE OR REPLACE FUNCTION assay_refuse_finished_run() RETURNS trigger AS $$
BEGIN
  IF OLD.status IN {FINISHED} THEN
    RAISE EXCEPTION 'assay: % of finished check run % is refused', TG_OP, OLD.id;
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""

_PG_PUBLISHED_POLICY = """
CREATE OR REPLACE FUNCTION assay_refuse_published_policy() RETURNS trigger AS $$
BEGIN
  IF OLD.status = 'published' THEN
    RAISE EXCEPTION 'assay: % of published policy % is refused', TG_OP, OLD.id;
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""

_PG_PUBLISHED_CHECK = """
CREATE OR REPLACE FUNCTION assay_refuse_published_check() RETURNS trigger AS $$
BEGIN
  IF (TG_OP <> 'INSERT' AND EXISTS (SELECT 1 FROM audits_checkpolicy
        WHERE id = OLD.policy_id AND status = 'published'))
     OR (TG_OP <> 'DELETE' AND EXISTS (SELECT 1 FROM audits_checkpolicy
        WHERE id = NEW.policy_id AND status = 'published')) THEN
    RAISE EXCEPTION 'assay: % of a required check of a published policy is refused', TG_OP;
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""


def _pg_trigger(name: str, table: str, events: str, function: str) -> str:
    return (
        f"CREATE OR REPLACE TRIGGER {name} BEFORE {events} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}();"
    )


def _sqlite_trigger(name: str, op: str, table: str, when: str, message: str) -> str:
    condition = f" WHEN {when}" if when else ""
    return (
        f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {op} ON {table}{condition} "
        f"BEGIN SELECT RAISE(ABORT, 'assay: {message}'); END;"
    )


def append_only_statements(vendor: str, tables: tuple[str, ...]) -> list[str]:
    if vendor == "postgresql":
        return [_PG_APPEND_ONLY] + [
            _pg_trigger("assay_append_only", table, "UPDATE OR DELETE", "assay_refuse_change")
            for table in tables
        ]
    if vendor == "sqlite":
        return [
            _sqlite_trigger(
                f"assay_append_only_{op.lower()}_{table}",
                op,
                table,
                "",
                f"{op} on {table} is refused: the table is append-only",
            )
            for table in tables
            for op in ("UPDATE", "DELETE")
        ]
    raise NotImplementedError(f"no append-only triggers for the {vendor} database")


def _published_check_condition(row: str) -> str:
    # row is the literal NEW or OLD of a trigger body, never input.
    query = "(SELECT status FROM audits_checkpolicy WHERE id = {}.policy_id) = 'published'"
    return query.format(row)


def sealed_record_statements(vendor: str) -> list[str]:
    """Finished check runs, published policies and their required checks."""
    if vendor == "postgresql":
        return [
            _PG_FINISHED_RUN,
            _PG_PUBLISHED_POLICY,
            _PG_PUBLISHED_CHECK,
            _pg_trigger(
                "assay_finished_run",
                "audits_checkrun",
                "UPDATE OR DELETE",
                "assay_refuse_finished_run",
            ),
            _pg_trigger(
                "assay_published_policy",
                "audits_checkpolicy",
                "UPDATE OR DELETE",
                "assay_refuse_published_policy",
            ),
            _pg_trigger(
                "assay_published_check",
                "audits_requiredcheck",
                "INSERT OR UPDATE OR DELETE",
                "assay_refuse_published_check",
            ),
        ]
    if vendor == "sqlite":
        return [
            *(
                _sqlite_trigger(
                    f"assay_finished_run_{op.lower()}",
                    op,
                    "audits_checkrun",
                    f"OLD.status IN {FINISHED}",
                    f"{op} of a finished check run is refused",
                )
                for op in ("UPDATE", "DELETE")
            ),
            *(
                _sqlite_trigger(
                    f"assay_published_policy_{op.lower()}",
                    op,
                    "audits_checkpolicy",
                    "OLD.status = 'published'",
                    f"{op} of a published policy is refused",
                )
                for op in ("UPDATE", "DELETE")
            ),
            *(
                _sqlite_trigger(
                    f"assay_published_check_{op.lower()}",
                    op,
                    "audits_requiredcheck",
                    _published_check_condition(row),
                    f"{op} of a required check of a published policy is refused",
                )
                for op, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD"))
            ),
        ]
    raise NotImplementedError(f"no triggers for the {vendor} database")


def create_statements(vendor: str) -> list[str]:
    """Every trigger of the current schema (tests reinstall them after a flush)."""
    return append_only_statements(vendor, PROTECTED_TABLES) + sealed_record_statements(vendor)


def drop_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [
            *(f"DROP TRIGGER IF EXISTS assay_append_only ON {t};" for t in PROTECTED_TABLES),
            "DROP TRIGGER IF EXISTS assay_finished_run ON audits_checkrun;",
            "DROP TRIGGER IF EXISTS assay_published_policy ON audits_checkpolicy;",
            "DROP TRIGGER IF EXISTS assay_published_check ON audits_requiredcheck;",
        ]
    names = [
        *(f"assay_append_only_{op}_{t}" for t in PROTECTED_TABLES for op in ("update", "delete")),
        *(f"assay_finished_run_{op}" for op in ("update", "delete")),
        *(f"assay_published_policy_{op}" for op in ("update", "delete")),
        *(f"assay_published_check_{op}" for op in ("insert", "update", "delete")),
    ]
    return [f"DROP TRIGGER IF EXISTS {name};" for name in names]


def install(schema_editor, tables: tuple[str, ...] = APPEND_ONLY_V1) -> None:
    for statement in append_only_statements(schema_editor.connection.vendor, tables):
        schema_editor.execute(statement, params=None)


def remove(schema_editor, tables: tuple[str, ...] = APPEND_ONLY_V1) -> None:
    vendor = schema_editor.connection.vendor
    statements = (
        [f"DROP TRIGGER IF EXISTS assay_append_only ON {t};" for t in tables]
        if vendor == "postgresql"
        else [
            f"DROP TRIGGER IF EXISTS assay_append_only_{op}_{t};"
            for t in tables
            for op in ("update", "delete")
        ]
    )
    for statement in statements:
        schema_editor.execute(statement, params=None)


def install_sealed(schema_editor) -> None:
    for statement in sealed_record_statements(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def remove_sealed(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    keep = set(drop_statements(vendor)) - {
        s
        for t in PROTECTED_TABLES
        for s in (
            f"DROP TRIGGER IF EXISTS assay_append_only ON {t};",
            f"DROP TRIGGER IF EXISTS assay_append_only_update_{t};",
            f"DROP TRIGGER IF EXISTS assay_append_only_delete_{t};",
        )
    }
    for statement in sorted(keep):
        schema_editor.execute(statement, params=None)
