"""Recompute the ledger and everything it vouches for, and say what does not match.

Used by `manage.py verify_ledger`. Two passes: the cryptographic one (audits.verification.chain:
event bytes, chain, Merkle nodes, signed checkpoints in the database and held elsewhere) and
the records one (audits.verification.records: what the gate and the API read agrees with the
ledger). Nothing stored as derived is trusted.
"""

from pathlib import Path

from django.conf import settings

from audits import ledger
from audits.verification import chain, records


def external_checkpoints(paths: list[Path]) -> list[tuple[str, dict]]:
    """(where, signed checkpoint) from each file; the deployment's checkpoint log is always
    read when it exists."""
    found = []
    log = Path(settings.ASSAY_CHECKPOINT_LOG)
    for path in ([log] if log.exists() else []) + [Path(p) for p in paths]:
        for i, point in enumerate(ledger.read_checkpoints(path), start=1):
            found.append((f"checkpoint {i} in {path}", point))
    return found


def verify_everything(checkpoint_files: list[Path] | None = None) -> list[str]:
    problems, tree = chain.check_events()
    problems += chain.check_stored_nodes(tree)
    problems += chain.check_checkpoints(tree, external_checkpoints(checkpoint_files or []))
    return problems + records.check_all()
