#!/bin/sh
# Restore a backup made by docker/backup.sh into an EMPTY database and an empty evidence store.
#
#   createdb assay_restored
#   DATABASE_URL=postgres://…/assay_restored ASSAY_EVIDENCE_ROOT=… ASSAY_CHECKPOINT_LOG=… \
#     docker/restore.sh SRC
#   python manage.py verify_ledger --no-sign      # with the restored deployment's settings
#
# The checkpoint signing key must be in place (ASSAY_LEDGER_KEY_FILE, from your secret store)
# before verify_ledger runs: it checks every checkpoint's signature with it.
set -eu

src=${1:?usage: restore.sh SRC_DIR}
: "${DATABASE_URL:?set DATABASE_URL}"
evidence=${ASSAY_EVIDENCE_ROOT:?set ASSAY_EVIDENCE_ROOT}
checkpoints=${ASSAY_CHECKPOINT_LOG:?set ASSAY_CHECKPOINT_LOG}

(cd "$src" && sha256sum --check --quiet SHA256SUMS)

if [ -s "$checkpoints" ]; then
  echo "restore: $checkpoints already holds checkpoints; restore into a fresh deployment" >&2
  exit 1
fi
if [ -d "$evidence" ] && [ -n "$(ls -A "$evidence" 2>/dev/null)" ]; then
  echo "restore: $evidence is not empty; restore into a fresh evidence store" >&2
  exit 1
fi

pg_restore --exit-on-error --no-owner --no-privileges --dbname="$DATABASE_URL" "$src/assay.pgdump"
mkdir -p "$evidence" "$(dirname "$checkpoints")"
tar -C "$evidence" -xf "$src/evidence.tar"
cp "$src/checkpoints.jsonl" "$checkpoints"
echo "restored from $src; now run: manage.py verify_ledger --no-sign"
