"""Database triggers that refuse UPDATE and DELETE on the append-only tables.

The models refuse such changes too; the triggers also stop anyone who reaches the database
directly. A superuser can still get around them (that is what verify_ledger is for).
"""

PROTECTED_TABLES = (
    "audits_auditevent",
    "audits_decision",
    "audits_evidence",
    "audits_ledgercheckpoint",
)

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION assay_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'assay: % on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""


def create_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [_PG_FUNCTION] + [
            f"CREATE OR REPLACE TRIGGER assay_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION assay_refuse_change();"
            for table in PROTECTED_TABLES
        ]
    if vendor == "sqlite":
        return [
            f"CREATE TRIGGER IF NOT EXISTS assay_append_only_{op.lower()}_{table} BEFORE {op} "
            f"ON {table} BEGIN SELECT RAISE(ABORT, 'assay: {op} on {table} is refused: the "
            "table is append-only'); END;"
            for table in PROTECTED_TABLES
            for op in ("UPDATE", "DELETE")
        ]
    raise NotImplementedError(f"no append-only triggers for the {vendor} database")


def drop_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS assay_append_only ON {table};" for table in PROTECTED_TABLES
        ]
    return [
        f"DROP TRIGGER IF EXISTS assay_append_only_{op.lower()}_{table};"
        for table in PROTECTED_TABLES
        for op in ("UPDATE", "DELETE")
    ]


def install(schema_editor) -> None:
    for statement in create_statements(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def remove(schema_editor) -> None:
    for statement in drop_statements(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)
