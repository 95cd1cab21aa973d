"""A real release (seven check kinds run by the worker's task, a re-run, signed decisions)
exported once per module, for the tests that read the PDF and attack the bundle. The records
are rolled back after the export; the files stay."""

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings

from audits import ledger
from audits.dossier import actions
from audits.models import AuditEvent
from tests.dossier import scenario
from tests.integration.conftest import broker  # noqa: F401
from tests.security.conftest import approved_release, checked_release  # noqa: F401


@dataclass
class Exported:
    root: Path
    pdf: Path
    bundle: Path
    export_id: str
    release_id: str
    records: dict  # records/*.json as bundled
    other_tree_proof: dict  # a real inclusion proof of one bundled event, for a smaller tree
    pdf_sha256: str
    manifest_sha256: str

    def files(self) -> dict[str, bytes]:
        with zipfile.ZipFile(self.bundle) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    def copy_to(self, target: Path) -> Path:
        """A fresh copy of the export (PDF beside the bundle), for one test to change."""
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.pdf, target / "dossier.pdf")
        shutil.copy(self.bundle, target / "bundle.zip")
        return target / "bundle.zip"


def _settings(root: Path) -> dict:
    return {
        "ASSAY_MODEL_ROOTS": [root.resolve()],
        "ASSAY_LENS_ROOTS": [root.resolve()],
        "ASSAY_EVIDENCE_ROOT": (root / "evidence").resolve(),
        "ASSAY_DOSSIER_ROOT": (root / "dossiers").resolve(),
    }


@pytest.fixture(scope="module")
def exported(django_db_setup, django_db_blocker, tmp_path_factory) -> Exported:
    root = tmp_path_factory.mktemp("dossier")
    with override_settings(**_settings(root)), django_db_blocker.unblock(), transaction.atomic():
        who, release = scenario.build(root)
        export = actions.export_dossier(actor=who.auditor, release=release, out_dir=root / "out")
        opened = AuditEvent.objects.get(verb="release.opened", target_id=str(release.pk))
        other = ledger.inclusion(opened.seq, export.tree_size - 1)
        result = Exported(
            root=root,
            pdf=root / "out" / "dossier.pdf",
            bundle=root / "out" / "bundle.zip",
            export_id=str(export.pk),
            release_id=str(release.pk),
            records={},
            other_tree_proof=other,
            pdf_sha256=export.pdf_sha256,
            manifest_sha256=export.manifest_sha256,
        )
        transaction.set_rollback(True)
    with zipfile.ZipFile(result.bundle) as archive:
        result.records = {
            name.removeprefix("records/").removesuffix(".json"): json.loads(archive.read(name))
            for name in archive.namelist()
            if name.startswith("records/")
        }
    return result


@pytest.fixture
def dossier_settings(settings, tmp_path):
    """Settings for a test that exports inside its own transaction."""
    for name, value in _settings(tmp_path).items():
        setattr(settings, name, value)
    return settings
