#!/bin/sh
# Back up Assay into DEST: the ledger's external checkpoints, PostgreSQL, the evidence store.
#
#   DATABASE_URL=postgres://… ASSAY_EVIDENCE_ROOT=… ASSAY_CHECKPOINT_LOG=… docker/backup.sh DEST
#
# The order matters. Checkpoints are copied first, so that every checkpoint in the backup signs
# a ledger no longer than the one dumped next (a checkpoint is appended only after its ledger
# rows committed); the evidence store is copied last, so it holds every file the dump refers to
# (evidence is written before its row, and never changed or deleted). Not included, on
# purpose: the checkpoint signing key (ASSAY_LEDGER_KEY_FILE), a secret that belongs in your
# secret store. docs/operations.md, "Backup and restore", has the rest.
set -eu

dest=${1:?usage: backup.sh DEST_DIR}
: "${DATABASE_URL:?set DATABASE_URL}"
evidence=${ASSAY_EVIDENCE_ROOT:?set ASSAY_EVIDENCE_ROOT}
checkpoints=${ASSAY_CHECKPOINT_LOG:?set ASSAY_CHECKPOINT_LOG}
mkdir -p "$dest"

# 1. The checkpoints held outside the database.
if [ -f "$checkpoints" ]; then
  cp "$checkpoints" "$dest/checkpoints.jsonl"
else
  : > "$dest/checkpoints.jsonl"
fi

# 2. The database, as one consistent snapshot (pg_dump reads in one transaction). Triggers
#    (append-only tables) are restored after the data, so a restore never trips them.
pg_dump --format=custom --no-owner --no-privileges --file="$dest/assay.pgdump" "$DATABASE_URL"

# 3. The evidence store: content-addressed files (an rsync --ignore-existing works as well).
mkdir -p "$evidence"
tar -C "$evidence" -cf "$dest/evidence.tar" .

(cd "$dest" && sha256sum checkpoints.jsonl assay.pgdump evidence.tar > SHA256SUMS)
echo "backup written to $dest"
