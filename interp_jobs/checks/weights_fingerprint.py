"""weights_fingerprint: the model's files on disk still match the digests taken at registration.

Evidence kind: integrity. Any changed, missing or unexpected file fails the check and is listed.
"""

import json
from pathlib import Path

from interp_jobs.checks.base import (
    FAIL,
    INTEGRITY,
    PASS,
    ArtifactData,
    CheckContext,
    CheckResult,
    Spec,
)
from interp_jobs.checks.figures import table_svg
from interp_jobs.engine.loading.fingerprint import hash_files, model_files

DESCRIPTION = "sha256 of every model file compared with the digests recorded at registration"
EVIDENCE_KIND = INTEGRITY
HEAVY = False  # hashing files needs no accelerator
SOFT_TIME_LIMIT = 900


class Parameters(Spec):
    pass


class Thresholds(Spec):
    pass


Context = CheckContext[Parameters, Thresholds]


def compare(recorded: dict[str, str], measured: dict[str, str]) -> list[dict]:
    rows = []
    for name in sorted(set(recorded) | set(measured)):
        want, got = recorded.get(name), measured.get(name)
        if want is None:
            status = "unexpected"
        elif got is None:
            status = "missing"
        else:
            status = "match" if want == got else "changed"
        rows.append({"file": name, "status": status, "recorded": want, "measured": got})
    return rows


def _summary(rows: list[dict], mismatched: list[dict]) -> str:
    if not mismatched:
        return (
            f"All {len(rows)} model file(s) hash to the sha256 digests recorded when the "
            "model version was registered, so the checks of this release ran on the "
            "registered weights."
        )
    listing = ", ".join(f"{row['file']} ({row['status']})" for row in mismatched)
    return (
        f"{len(mismatched)} of {len(rows)} model file(s) differ from the digests recorded "
        f"at registration: {listing}. The files on disk are not the registered model; "
        "evidence measured on them would not describe the registered version."
    )


def run(context: Context) -> CheckResult:
    context.progress(0.0, "listing model files")
    files = model_files(Path(context.model.path), context.model.format)
    context.log(f"hashing {len(files)} file(s) under {context.model.path}")
    measured = hash_files(files, lambda done: context.progress(done * 0.95, "hashing files"))
    rows = compare(dict(context.model.file_digests), measured)
    mismatched = [row for row in rows if row["status"] != "match"]
    report = {
        "model_path": context.model.path,
        "format": context.model.format,
        "recorded_weights_digest": context.model.weights_digest,
        "files": rows,
    }
    figure = table_svg(
        "Model files: recorded vs measured sha256",
        ("file", "status", "measured sha256"),
        [(row["file"], row["status"], (row["measured"] or "-")[:16]) for row in rows],
        (320, 100, 160),
    )
    return CheckResult(
        verdict=FAIL if mismatched else PASS,
        evidence_kind=EVIDENCE_KIND,
        metrics={
            "files": len(rows),
            "mismatched": len(mismatched),
            "mismatched_files": [row["file"] for row in mismatched],
        },
        summary=_summary(rows, mismatched),
        artifacts=(
            ArtifactData(
                "fingerprint.json",
                "application/json",
                json.dumps(report, indent=2, sort_keys=True).encode(),
            ),
            ArtifactData("fingerprint.svg", "image/svg+xml", figure),
        ),
    )
