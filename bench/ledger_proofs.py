"""Ledger proofs and verification at 10^4, 10^5 and 10^6 events: O(log n) against O(n).

    .venv/bin/python bench/ledger_proofs.py [--sizes 10000,100000,1000000] [--quick]
        [--samples N] [--repeats N] [--checkpoints N] [--old-way-budget S] [--keep]

One fresh SQLite database in a temporary directory (never a shared one) grows to each size in
turn; at each size:

- proofs: ``ledger.inclusion(seq, n)`` and ``ledger.consistency(m, n)`` for random seq / m,
  and ``ledger.checkpoint()`` on a tree that grew by one event (``accounts.
  record_password_changed``, a real action) before each. Baseline: the same proof or root the
  old way, from all n leaf hashes (``merkle.inclusion_proof(i, ledger.leaf_hashes(n))``), timed
  interleaved with the new way while it fits in ``--old-way-budget`` seconds per kind, and only
  up to ``--old-way-max-size``. Goal: p95 <= 20 ms at 10^6 events.
- verify_ledger's cryptographic pass (``chain.check_events()`` + ``chain.check_stored_nodes()``)
  in events/s against raw sha256 over the same bodies already in memory: one
  ``hashlib.sha256(body)`` per event in a Python loop (goal: >= 0.3 of it) and, stricter, one
  sha256 over all bodies concatenated. The records pass's column check
  (``records.check_columns()``, which loads each row as a model instance and parses its JSON)
  against ``json.loads`` over the same bodies in memory.
- peak memory of both passes (tracemalloc, and the RSS high-water mark), against the bodies'
  total size.

The ledger is built fast but faithfully: a few users are created through the ORM (their
``user.created`` events written by ``ledger.record``), then events are generated with the
shapes the actions write (check runs, releases, policies, decisions, model versions, lenses,
accounts), their bytes made by ``ledger.entry_bytes``, the hash chain, Merkle nodes and the
ledger head's frontier computed as ``ledger.record`` / ``ledger._append_leaf`` do, and
inserted with ``bulk_create``. Every measured ledger must pass the verification it is timed on
(no problems, stored root = recomputed root, head frontier = the recomputed tree's); at the
smallest size the ledger is verified again after ``ledger.record`` and ``ledger.checkpoint``
have appended to it (chain, nodes, checkpoints, columns).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import resource
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness

BENCH = "ledger_proofs"
PROOF_GOAL_MS = 20.0  # p95 of a proof (and of a checkpoint) at 10^6 events
THROUGHPUT_GOAL = 0.3  # cryptographic pass / raw sha256 per-event loop
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (200,)
BUILD_BATCH = 5_000
USERS = ("alice", "bob", "carol", "dmitri", "erin", "farid")
QUICK_NOTE = "--quick: a tiny ledger and few samples; a smoke test, not a measurement. "


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated ledger sizes, ascending (default 10000,100000,1000000; "
        "1e5 style accepted)",
    )
    p.add_argument("--quick", action="store_true", help="one tiny ledger (smoke test)")
    p.add_argument("--samples", type=int, default=None, help="proof requests per kind (>= 50)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes of each verification")
    p.add_argument(
        "--checkpoints", type=int, default=None, help="checkpoints signed per size (>= 50)"
    )
    p.add_argument(
        "--old-way-budget",
        type=float,
        default=60.0,
        help="seconds per proof kind for the old way (from all leaf hashes) at each size",
    )
    p.add_argument(
        "--old-way-max-size",
        type=int,
        default=100_000,
        help="largest ledger on which the old way is timed",
    )
    p.add_argument("--dir", default=None, help="parent of the temporary database directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary database")
    # Internal: measure one pass's peak RSS in this fresh process, on the database in --workdir.
    p.add_argument("--memory-of", choices=("crypto", "columns"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sizes:
        args.sizes = [int(float(size)) for size in args.sizes.split(",")]
    else:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.sizes != sorted(args.sizes) or args.sizes[0] < 2:
        p.error("--sizes must be ascending and at least 2 (the ledger grows from one to the next)")
    args.samples = args.samples or (10 if args.quick else 60)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.checkpoints = args.checkpoints or (5 if args.quick else 60)
    return args


# --- a private Django project -----------------------------------------------------------------


def setup_django(workdir: Path, *, migrate: bool = True) -> None:
    """Settings on a fresh SQLite file under workdir; nothing of the caller's environment that
    could point at a shared database, key or checkpoint log is kept."""
    for name in list(os.environ):
        if name.startswith("ASSAY_") or name == "DATABASE_URL":
            del os.environ[name]
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSAY_SECRET_KEY": secrets.token_urlsafe(50),  # DEBUG off: no query log
            "ASSAY_VAR_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "ASSAY_LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        call_command("migrate", verbosity=0, interactive=False)


def make_users() -> list:
    """Users made as anyone makes them: each save writes its user.created event."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return [model.objects.create_user(name, password=None) for name in USERS]


# --- realistic events ------------------------------------------------------------------------

CHECKS = (
    "feature_activation_audit",
    "refusal_rate",
    "circuit_trace",
    "lens_reconstruction",
    "capability_probe",
)
WORKERS = ("celery@worker-1", "celery@worker-2", "celery@gpu-worker-1")
REASONS = (
    "the worker was lost while the check ran (hard time limit reached after 1900 s)",
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total capacity; "
    "35.10 GiB already allocated; 1.91 GiB free; 36.42 GiB reserved in total by PyTorch)",
    "evidence write failed: [Errno 28] No space left on device",
    "model file digest changed since registration: refusing to load weights whose bytes "
    "differ from the ones the release was opened for",
)
STATES = ("draft", "checking", "in_review", "approved", "rejected")


class EventMaker:
    """Event fields with the shapes and frequencies of a working deployment: mostly check-run
    events, some releases and decisions, a few large policy and model-version events."""

    def __init__(self, rng: random.Random, users: list) -> None:
        self.rng = rng
        self.users = users
        self.runs: list[str] = []
        self.releases: list[str] = [self._uuid() for _ in range(4)]
        self.policy = self._uuid()
        self.kinds = (
            (0.22, self.run_queued),
            (0.20, self.run_started),
            (0.18, self.run_succeeded),
            (0.04, self.run_errored),
            (0.08, self.release_opened),
            (0.10, self.release_state),
            (0.06, self.decision),
            (0.03, self.policy_edited),
            (0.03, self.model_digested),
            (0.02, self.lens_validated),
            (0.04, self.account),
        )
        self.weights = [w for w, _ in self.kinds]

    def _uuid(self) -> str:
        return "%08x-%04x-4%03x-%04x-%012x" % (  # noqa: UP031 - a uuid4's layout
            self.rng.getrandbits(32),
            self.rng.getrandbits(16),
            self.rng.getrandbits(12),
            0x8000 | self.rng.getrandbits(14),
            self.rng.getrandbits(48),
        )

    def _hex(self, n: int = 64) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def _run(self) -> str:
        return self.rng.choice(self.runs) if self.runs else self._uuid()

    def next(self) -> tuple[object | None, str, str, str, dict]:
        """(actor user or None, verb, target_type, target_id, data)."""
        (make,) = self.rng.choices([k for _, k in self.kinds], self.weights)
        return make()

    def person(self):
        return self.rng.choice(self.users)

    def run_queued(self):
        run = self._uuid()
        self.runs = [*self.runs[-200:], run]
        data = {
            "release": self.rng.choice(self.releases),
            "check": self.rng.choice(CHECKS),
            "attempt": self.rng.randint(1, 3),
        }
        return self.person(), "check_run.queued", "checkrun", run, data

    def run_started(self):
        data = {
            "worker": self.rng.choice(WORKERS),
            "delivery": self.rng.randint(1, 2),
            "redelivered": self.rng.random() < 0.05,
        }
        return None, "check_run.started", "checkrun", self._run(), data

    def run_succeeded(self):
        data = {
            "verdict": self.rng.choice(("pass", "fail", "warn")),
            "manifest_digest": self._hex(),
        }
        return None, "check_run.succeeded", "checkrun", self._run(), data

    def run_errored(self):
        reason = self.rng.choice(REASONS)
        return None, "check_run.errored", "checkrun", self._run(), {"reason": reason}

    def release_opened(self):
        release = self._uuid()
        self.releases = [*self.releases[-50:], release]
        data = {
            "model_version": self._uuid(),
            "weights_digest": self._hex(),
            "policy": self.policy,
            "policy_digest": self._hex(),
            "purpose": self.rng.choice(("release", "release", "evaluation")),
        }
        return self.person(), "release.opened", "release", release, data

    def release_state(self):
        before, after = self.rng.sample(STATES, 2)
        reasons = [
            f"{check}: {self.rng.choice(('awaiting result', 'failed', 'needs approval'))}"
            for check in self.rng.sample(CHECKS, self.rng.randint(0, 3))
        ]
        data = {"from": before, "to": after, "reasons": reasons, "trust_warnings": []}
        return None, "release.state_changed", "release", self.rng.choice(self.releases), data

    def decision(self):
        data = {
            "release": self.rng.choice(self.releases),
            "decision": self.rng.choice(("approve", "reject", "approve_with_conditions")),
            "check": self.rng.choice(("", *CHECKS)),
            "key_id": self._hex(),
            "payload_sha256": self._hex(),
            "evidence_digest": self._hex(),
        }
        return self.person(), "decision.recorded", "decision", self._uuid(), data

    def policy_edited(self):
        checks = [
            {
                "key": key,
                "kind": key,
                "parameters": {"probe_axes": ["weapons", "cyber", "neutral"], "n_prompts": 40},
                "thresholds": {"max_firing_rate_on_neutral": 0.05, "min_recall": 0.8},
                "blocking": self.rng.random() < 0.7,
            }
            for key in self.rng.sample(CHECKS, self.rng.randint(1, 3))
        ]
        data = {
            "name": "frontier-release",
            "version": self.rng.randint(1, 40),
            "description": "Checks every release candidate must pass before it ships.",
            "approvals_required": 2,
            "approver_role": "approver",
            "submitter_may_approve": False,
            "required_checks": checks,
        }
        return self.person(), "policy.edited", "checkpolicy", self.policy, data

    def model_digested(self):
        files = {
            name: self._hex()
            for name in self.rng.sample(
                (
                    "config.json",
                    "generation_config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                ),
                self.rng.randint(2, 5),
            )
        }
        data = {
            "weights_digest": self._hex(),
            "tokenizer_digest": self._hex(),
            "config_digest": self._hex(),
            "files": files,
        }
        return None, "model_version.digested", "modelversion", self._uuid(), data

    def lens_validated(self):
        layer = self.rng.randint(0, 29)
        data = {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "architecture": self.rng.choice(("standard", "topk", "jumprelu")),
            "d_in": 576,
            "d_sae": self.rng.choice((4096, 8192, 16384)),
            "digest": self._hex(),
        }
        return None, "lens.validated", "lens", self._uuid(), data

    def account(self):
        user = self.person()
        verb, data = self.rng.choice(
            (
                ("user.role_granted", {"role": "reviewer"}),
                ("user.password_changed", {}),
                ("user.token_created", {"token_id": self._hex(16), "expiry": None}),
            )
        )
        return self.person(), verb, "user", str(user.pk), {"user": user.get_username(), **data}


def extend_ledger(target: int, maker: EventMaker, clock: list[datetime]) -> float:
    """Append events until the ledger holds ``target``; what ``ledger.record`` would store
    (event rows, Merkle nodes, head), in batches. Returns the seconds it took."""
    from django.db import transaction

    from audits import ledger, merkle
    from audits.canonical import canonical_json
    from audits.models import AuditEvent, LedgerHead, MerkleNode

    start = time.perf_counter()
    head = LedgerHead.objects.get_or_create(pk=1)[0]
    seq, prev, frontier = head.seq, head.head_hash, list(head.frontier)
    while seq < target:
        events, nodes = [], []
        for _ in range(min(BUILD_BATCH, target - seq)):
            seq += 1
            actor, verb, target_type, target_id, data = maker.next()
            clock[0] += timedelta(microseconds=maker.rng.randint(1_000, 90_000_000))
            data = json.loads(canonical_json(data))  # as record() stores it
            label = ledger.actor_label(actor)
            body = ledger.entry_bytes(
                seq=seq,
                at=clock[0],
                actor=label,
                verb=verb,
                target_type=target_type,
                target_id=target_id,
                data=data,
                prev_hash=prev,
            )
            entry_hash = hashlib.sha256(body).hexdigest()
            events.append(
                AuditEvent(
                    seq=seq,
                    at=clock[0],
                    actor=actor,
                    actor_label=label,
                    verb=verb,
                    target_type=target_type,
                    target_id=target_id,
                    data=data,
                    prev_hash=prev,
                    entry_hash=entry_hash,
                    body=body.decode("utf-8"),
                )
            )
            # ledger._append_leaf without its per-leaf insert.
            index, carry, level = seq - 1, merkle.leaf_hash(body), 0
            nodes.append(MerkleNode(level=0, index=index, hash=carry.hex()))
            while level < len(frontier) and frontier[level] is not None:
                carry = merkle.node_hash(bytes.fromhex(frontier[level]), carry)
                frontier[level] = None
                level += 1
                nodes.append(MerkleNode(level=level, index=index >> level, hash=carry.hex()))
            if level == len(frontier):
                frontier.append(carry.hex())
            else:
                frontier[level] = carry.hex()
            prev = entry_hash
        with transaction.atomic():
            AuditEvent.objects.bulk_create(events)
            MerkleNode.objects.bulk_create(nodes)
            LedgerHead.objects.filter(pk=1).update(seq=seq, head_hash=prev, frontier=frontier)
    return time.perf_counter() - start


def expected_frontier(tree, n: int) -> list:
    """The head's frontier for a tree of n leaves: the right-edge perfect roots, by level."""
    return [
        tree.levels[level][(n >> level) - 1].hex() if (n >> level) & 1 else None
        for level in range(n.bit_length())
    ]


def assert_real(tree, problems: list[str], n: int, what: str) -> None:
    """The benchmark measures a real ledger: it verifies, and proofs come from its root."""
    from audits import ledger
    from audits.models import LedgerHead

    if problems:
        raise SystemExit(f"{what}: the ledger of {n} events does not verify: {problems[:3]}")
    if tree.size != n or tree.root(n) != ledger.root_hash(n):
        raise SystemExit(f"{what}: the stored root of {n} differs from the recomputed one")
    if LedgerHead.objects.get(pk=1).frontier != expected_frontier(tree, n):
        raise SystemExit(f"{what}: the ledger head's frontier is not the tree's right edge")


# --- the line --------------------------------------------------------------------------------


def machine(loads: list[list[float]]) -> dict:
    ones = [load[0] for load in loads]
    return {
        "cpu": harness._cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "load_average": harness.load_average(),
        "load_average_range": [min(ones), max(ones)] if ones else None,
    }


def emit(
    *,
    measure: str,
    n: int,
    value: float,
    unit: str,
    baseline: tuple[str, float | None],
    ratio: float | None,
    ratio_of: str,
    goal: str | None,
    meets_goal: bool | None,
    ledger_info: dict,
    notes: str,
    loads: list[list[float]],
    quick: bool,
    **extra,
) -> None:
    sig = harness.sig
    line = {
        "bench": BENCH,
        "measure": measure,
        "n": n,
        "value": sig(value),
        "unit": unit,
        "baseline": {"name": baseline[0], "value": sig(baseline[1])},
        "ratio": sig(ratio),
        "ratio_of": ratio_of,
        "goal": goal,
        "meets_goal": meets_goal,
        "machine": machine(loads),
        "ledger": ledger_info,
        "notes": (QUICK_NOTE if quick else "") + notes,
        **{key: sig(v) if isinstance(v, float) else v for key, v in extra.items()},
    }
    print(json.dumps(line), flush=True)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


# --- proofs ----------------------------------------------------------------------------------


class OldWay:
    """Times the old way on the first requests, interleaved with the new way, while it fits in
    the budget (at least 3 samples, or none where one call alone would exceed the budget)."""

    def __init__(self, enabled: bool, budget: float) -> None:
        self.enabled, self.budget, self.spent, self.ms = enabled, budget, 0.0, []
        self.agree = True

    def want(self) -> bool:
        if not self.enabled:
            return False
        if len(self.ms) < 3:
            return not self.ms or self.ms[0] / 1000 * 3 <= self.budget
        return self.spent + statistics.median(self.ms) / 1000 <= self.budget

    def time(self, fn):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.spent += seconds
        self.ms.append(seconds * 1000)
        return result


def timed_ms(fn, cpu: list[float] | None = None):
    """Wall milliseconds of fn() and its result; its CPU milliseconds appended to ``cpu``
    (on a shared machine, wall time also holds the waits for a core and for the disk)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    if cpu is not None:
        cpu.append((time.process_time() - start_cpu) * 1000)
    return (time.perf_counter() - start) * 1000, result


def measure_proofs(args, n: int, rng: random.Random, info: dict, loads: list) -> None:
    from audits import ledger

    old_enabled = n <= args.old_way_max_size
    for kind in ("inclusion", "consistency"):
        old = OldWay(old_enabled, args.old_way_budget)
        new_ms: list[float] = []
        cpu_ms: list[float] = []
        for i in range(args.samples):
            if kind == "inclusion":
                seq = rng.randint(1, n)
                new = lambda seq=seq: ledger.inclusion(seq, n)  # noqa: E731
                first = seq
            else:
                first = rng.randint(1, n - 1)
                new = lambda first=first: ledger.consistency(first, n)  # noqa: E731
            new_first = i % 2 == 0  # alternate which way runs first
            old_proof = None
            if new_first:
                ms, proof = timed_ms(new, cpu_ms)
            if old.want():
                old_proof = old.time(lambda kind=kind, first=first: old_way(kind, first, n))
            if not new_first:
                ms, proof = timed_ms(new, cpu_ms)
            new_ms.append(ms)
            check_proof(kind, proof, first, n, old_proof, old)
        emit_proof(args, kind, n, new_ms, cpu_ms, old, info, loads)


def old_way(kind: str, first: int, n: int) -> list[bytes]:
    """The proof as it was computed before stored nodes: from all n leaf hashes."""
    from audits import ledger, merkle

    if kind == "inclusion":
        return merkle.inclusion_proof(first - 1, ledger.leaf_hashes(n))
    return merkle.consistency_proof(first, ledger.leaf_hashes(n))


def check_proof(kind: str, proof: dict, first: int, n: int, old_proof, old: OldWay) -> None:
    """Every timed proof verifies against its root (and equals the old way's where run)."""
    from audits import merkle

    root = bytes.fromhex(proof["root_hash" if kind == "inclusion" else "second_root"])
    if kind == "inclusion":
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        ok = merkle.verify_inclusion(first - 1, n, bytes.fromhex(proof["leaf_hash"]), path, root)
    else:
        path = [bytes.fromhex(h) for h in proof["proof"]]
        ok = merkle.verify_consistency(first, n, bytes.fromhex(proof["first_root"]), root, path)
    if not ok:
        raise SystemExit(f"a {kind} proof at {first}/{n} does not verify")
    if old_proof is not None and old_proof != path:
        old.agree = False
        raise SystemExit(f"the {kind} proof at {first}/{n} differs from the old way's")


def emit_proof(args, kind, n, new_ms, cpu_ms, old: OldWay, info, loads) -> None:
    median, tail = statistics.median(new_ms), p95(new_ms)
    old_median = statistics.median(old.ms) if old.ms else None
    call = "inclusion(seq, n)" if kind == "inclusion" else "consistency(m, n)"
    old_call = "inclusion_proof(seq - 1" if kind == "inclusion" else "consistency_proof(m"
    if old.ms:
        base_note = (
            f"Baseline: merkle.{old_call}, ledger.leaf_hashes(n)), the old way, timed on the "
            f"first {len(old.ms)} of the same requests, interleaved; proofs equal. "
        )
    else:
        base_note = (
            "The old way was not timed at this size (over --old-way-max-size or the budget): "
            "it reads and hashes all n events per proof. "
        )
    emit(
        measure=f"{kind}_proof_ms",
        n=n,
        value=median,
        unit="ms (median)",
        baseline=("old way: from all n leaf hashes (median ms)", old_median),
        ratio=old_median / median if old_median else None,
        ratio_of="baseline / value, higher is better (speed-up)",
        goal=f"p95 <= {PROOF_GOAL_MS} ms at 10^6 events",
        meets_goal=tail <= PROOF_GOAL_MS,
        ledger_info=info,
        notes=(
            f"ledger.{call} over {len(new_ms)} random requests at tree_size n, each checked "
            "with merkle.verify_*. "
            + base_note
            + ("" if tail <= PROOF_GOAL_MS else f"GOAL NOT MET: p95 {tail:.1f} ms > 20 ms. ")
        ),
        loads=loads,
        quick=args.quick,
        p95_ms=tail,
        max_ms=max(new_ms),
        cpu_ms_median=statistics.median(cpu_ms),
        cpu_ms_p95=p95(cpu_ms),
        samples=len(new_ms),
        baseline_samples=len(old.ms),
        baseline_seconds_spent=old.spent,
    )


def checkpoint_verdict(tail: float, root_tail: float) -> str:
    if tail <= PROOF_GOAL_MS:
        return ""
    verdict = f"GOAL NOT MET: p95 {tail:.1f} ms > 20 ms"
    if root_tail <= PROOF_GOAL_MS / 2:
        verdict += (
            f" (the root's own p95 is {root_tail:.1f} ms: the tail lies outside the tree, in the "
            "signature, the row, the commit and the log's fsync on a shared disk)"
        )
    return verdict + ". "


def measure_checkpoints(args, n: int, user, info: dict, loads: list) -> int:
    """Sign ``--checkpoints`` checkpoints, the tree one event larger before each. Returns the
    ledger's size afterwards."""
    from audits import ledger, merkle
    from audits.actions import accounts

    old = OldWay(n <= args.old_way_max_size, args.old_way_budget)
    new_ms: list[float] = []
    cpu_ms: list[float] = []
    root_ms: list[float] = []
    size = n
    for i in range(args.checkpoints):
        accounts.record_password_changed(actor=None, user=user)  # a real event, not timed
        size += 1
        old_root = None
        if i % 2 == 1 and old.want():
            old_root = old.time(lambda s=size: merkle.root(ledger.leaf_hashes(s)))
        ms, point = timed_ms(ledger.checkpoint, cpu_ms)
        if i % 2 == 0 and old.want():
            old_root = old.time(lambda s=size: merkle.root(ledger.leaf_hashes(s)))
        new_ms.append(ms)
        root_ms.append(timed_ms(lambda s=size: ledger.root_hash(s))[0])
        if point.tree_size != size or (old_root and old_root.hex() != point.root_hash):
            raise SystemExit(f"checkpoint at {size} signs the wrong tree")
    median, tail = statistics.median(new_ms), p95(new_ms)
    old_median = statistics.median(old.ms) if old.ms else None
    emit(
        measure="checkpoint_ms",
        n=n,
        value=median,
        unit="ms (median)",
        baseline=("old way: merkle.root(ledger.leaf_hashes(n)) (median ms)", old_median),
        ratio=old_median / median if old_median else None,
        ratio_of="baseline / value, higher is better (speed-up)",
        goal=f"p95 <= {PROOF_GOAL_MS} ms at 10^6 events",
        meets_goal=tail <= PROOF_GOAL_MS,
        ledger_info=info,
        notes=(
            f"ledger.checkpoint() {len(new_ms)} times on trees of n+1 ... n+{len(new_ms)} "
            "events, each grown by one accounts.record_password_changed event (not timed): "
            "head lock, stored root, Ed25519 signature, LedgerCheckpoint row, and the "
            "checkpoint log's append + fsync on commit; root_hash_ms_*: ledger.root_hash alone "
            "on the same trees (timed after each checkpoint), the part that grows with n. "
            "The baseline computes only the root "
            f"the old way ({len(old.ms)} samples, interleaved), without signing or writing. "
            + checkpoint_verdict(tail, p95(root_ms))
        ),
        loads=loads,
        quick=args.quick,
        p95_ms=tail,
        max_ms=max(new_ms),
        cpu_ms_median=statistics.median(cpu_ms),
        cpu_ms_p95=p95(cpu_ms),
        samples=len(new_ms),
        baseline_samples=len(old.ms),
        root_hash_ms_median=statistics.median(root_ms),
        root_hash_ms_p95=p95(root_ms),
    )
    return size


# --- verification ----------------------------------------------------------------------------


def crypto_pass() -> tuple[list[str], object, float, float]:
    from audits.verification import chain

    start = time.perf_counter()
    problems, tree = chain.check_events()
    events_s = time.perf_counter() - start
    problems += chain.check_stored_nodes(tree)
    return problems, tree, events_s, time.perf_counter() - start - events_s


def columns_pass() -> list[str]:
    from audits.verification import records

    return records.check_columns()


def load_bodies() -> list[bytes]:
    from audits.models import AuditEvent

    rows = AuditEvent.objects.order_by("seq").values_list("body", flat=True)
    return [body.encode("utf-8") for body in rows.iterator(chunk_size=5000)]


def sha256_each(bodies: list[bytes]) -> None:
    sha256 = hashlib.sha256
    for body in bodies:
        sha256(body).digest()


def hashes_only(bodies: list[bytes]) -> None:
    """The hashing the cryptographic pass cannot avoid, on bodies in memory: the entry hash
    (hex, as compared), the RFC 6962 leaf hash, and one node hash per pair up the tree. Its
    speed against sha256_each bounds the ratio any implementation of the pass can reach."""
    sha256 = hashlib.sha256
    level = []
    for body in bodies:
        sha256(body).hexdigest()
        level.append(sha256(b"\x00" + body).digest())
    while len(level) > 1:
        level = [
            sha256(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=False)
        ]


def json_each(bodies: list[bytes]) -> None:
    loads = json.loads
    for body in bodies:
        loads(body)


PASSES = {"crypto": crypto_pass, "columns": columns_pass}


def rss_peak_of(part: str, workdir: Path) -> dict:
    """RSS high-water mark of one pass in a fresh process (so memory this process freed and
    kept cannot hide it), above the RSS just before the pass: harness.measure_peak."""
    return harness.run_child(__file__, ["--memory-of", part, "--workdir", str(workdir)])


def memory_child(args: argparse.Namespace) -> None:
    setup_django(Path(args.workdir), migrate=False)
    work = PASSES[args.memory_of]
    harness.report_child(harness.measure_peak(work))


def traced_peak_mib(work) -> float:
    """Peak Python allocation while ``work`` runs (tracemalloc; SQLite's own cache is not
    seen). Untimed: tracing slows the work several times."""
    gc.collect()
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / harness.MIB
    finally:
        tracemalloc.stop()


def measure_verification(args, n: int, info: dict, loads: list, workdir: Path):
    """Memory first (bodies not loaded), then interleaved timings. Returns the tree."""
    memory = {
        "crypto": {
            "traced_peak_mib": traced_peak_mib(crypto_pass),
            **rss_peak_of("crypto", workdir),
        },
        "columns": {
            "traced_peak_mib": traced_peak_mib(columns_pass),
            **rss_peak_of("columns", workdir),
        },
    }
    crypto_timings, columns_timings, results = timed_verification(args, n, info)
    problems, tree = results["crypto"]
    assert_real(tree, problems, n, "timed verification")
    if results["columns"]:
        raise SystemExit(f"check_columns found problems at {n}: {results['columns'][:3]}")
    loads += crypto_timings.loads + columns_timings.loads
    emit_verification(args, n, crypto_timings, columns_timings, results, memory, info, loads)
    return tree


def timed_verification(args, n: int, info: dict):
    """Both passes and their baselines, interleaved; the bodies are freed on return."""
    bodies = load_bodies()
    body_mib = sum(map(len, bodies)) / harness.MIB
    info["body_mib"] = round(body_mib, 2)
    info["mean_body_bytes"] = round(body_mib * harness.MIB / n, 1)
    sizes = sorted(map(len, bodies))
    info["body_bytes_p5_p50_p95"] = [sizes[len(sizes) * q // 100] for q in (5, 50, 95)]
    blob = b"".join(bodies)
    results: dict = {}

    def crypto(_):
        problems, tree, events_s, nodes_s = crypto_pass()
        results["crypto"] = (problems, tree)
        results.setdefault("split", []).append((events_s, nodes_s))

    def columns(_):
        results["columns"] = columns_pass()

    crypto_timings = harness.interleaved(
        {
            "crypto_pass": crypto,
            "sha256_each": lambda _: sha256_each(bodies),
            "sha256_concat": lambda _: hashlib.sha256(blob).digest(),
            "hashes_only": lambda _: hashes_only(bodies),
        },
        [None],
        args.repeats,
    )
    columns_timings = harness.interleaved(
        {"check_columns": columns, "json_loads_each": lambda _: json_each(bodies)},
        [None],
        args.repeats,
    )
    return crypto_timings, columns_timings, results


def emit_verification(args, n, crypto_t, columns_t, results, memory, info, loads) -> None:
    rate = {name: n / crypto_t.typical(name) for name in crypto_t.wall}
    rate |= {name: n / columns_t.typical(name) for name in columns_t.wall}
    events_s = statistics.median(s for s, _ in results["split"])
    nodes_s = statistics.median(s for _, s in results["split"])
    ratio = rate["crypto_pass"] / rate["sha256_each"]
    met = ratio >= THROUGHPUT_GOAL
    cap = rate["hashes_only"] / rate["sha256_each"]
    common = {"ledger_info": info, "loads": loads, "quick": args.quick}
    emit(
        measure="verify_crypto_events_per_s",
        n=n,
        value=rate["crypto_pass"],
        unit="events/s",
        baseline=("raw sha256 per event in a Python loop, bodies in memory", rate["sha256_each"]),
        ratio=ratio,
        ratio_of="value / baseline, higher is better",
        goal=f">= {THROUGHPUT_GOAL}",
        meets_goal=met,
        notes=(
            "chain.check_events() + chain.check_stored_nodes(tree): reads every event's body "
            "and hashes from SQLite, sha256 of the body (entry hash), sha256 of 0x00+body "
            "(leaf), ~1 node hash per event to rebuild the tree, then reads every stored "
            f"Merkle node and compares. Median of {args.repeats} interleaved passes. "
            "ratio_cap_from_hashing: the same hashes on bodies in memory, no database, against "
            f"the baseline ({cap:.3f}): no implementation of this pass can exceed it. "
            + ("" if met else f"GOAL NOT MET: {ratio:.3f} < {THROUGHPUT_GOAL}. ")
        ),
        seconds={name: harness.rounded(crypto_t.totals(name)) for name in crypto_t.wall},
        check_events_s=events_s,
        check_stored_nodes_s=nodes_s,
        ratio_by_cpu_time=crypto_t.typical("sha256_each", "cpu")
        / crypto_t.typical("crypto_pass", "cpu"),
        ratio_cap_from_hashing=cap,
        hashes_only_events_per_s=rate["hashes_only"],
        **common,
    )
    emit(
        measure="verify_crypto_vs_sha256_concat",
        n=n,
        value=rate["crypto_pass"],
        unit="events/s",
        baseline=("raw sha256 over all bodies concatenated (events/s)", rate["sha256_concat"]),
        ratio=rate["crypto_pass"] / rate["sha256_concat"],
        ratio_of="value / baseline, higher is better",
        goal=None,
        meets_goal=None,
        notes=(
            "The same pass against the stricter baseline: one sha256 over the bodies joined "
            "(no per-event Python overhead); the goal is set on the per-event loop only."
        ),
        sha256_each_mib_s=rate["sha256_each"] * info["mean_body_bytes"] / harness.MIB,
        sha256_concat_mib_s=rate["sha256_concat"] * info["mean_body_bytes"] / harness.MIB,
        **common,
    )
    emit(
        measure="verify_columns_events_per_s",
        n=n,
        value=rate["check_columns"],
        unit="events/s",
        baseline=(
            "json.loads per event in a Python loop, bodies in memory",
            rate["json_loads_each"],
        ),
        ratio=rate["check_columns"] / rate["json_loads_each"],
        ratio_of="value / baseline, higher is better",
        goal=None,
        meets_goal=None,
        notes=(
            "records.check_columns(), the records pass's per-event part: loads every event as a "
            "model instance (its data column decoded from JSON) and parses its body "
            "(json.loads), then compares eight columns. Not the cryptographic pass: no hashing. "
            f"Against raw sha256 per event it runs at "
            f"{rate['check_columns'] / rate['sha256_each']:.3f} of that."
        ),
        vs_sha256_each=rate["check_columns"] / rate["sha256_each"],
        seconds={name: harness.rounded(columns_t.totals(name)) for name in columns_t.wall},
        **common,
    )
    for part, label in (("crypto", "cryptographic pass"), ("columns", "check_columns")):
        mem = memory[part]
        emit(
            measure=f"verify_{part}_peak_mib",
            n=n,
            value=mem["traced_peak_mib"],
            unit="MiB (tracemalloc peak)",
            baseline=("event bodies, total bytes (MiB)", info["body_mib"]),
            ratio=mem["traced_peak_mib"] / info["body_mib"],
            ratio_of="value / baseline, lower is better",
            goal=None,
            meets_goal=None,
            notes=(
                f"Peak memory of the {label}, untimed: tracemalloc's peak of Python allocations "
                "(value; SQLite's own cache is outside it), and, in a fresh process running "
                "only the pass, the RSS high-water mark above the RSS just before it "
                "(peak_increase_mib; kernel mark reset first; rss_before_mib: Django loaded). "
                "No lifetime ru_maxrss: Linux carries the parent's RSS at fork into a child's."
            ),
            peak_increase_mib=mem["peak_increase_mib"],
            rss_before_mib=mem["rss_before_mib"],
            **common,
        )


def reverify_after_real_writes(n: int) -> None:
    """At the smallest size: after record() and checkpoint() appended to the fast-built
    ledger, everything verifies, checkpoints (database and log) included."""
    from audits import verification
    from audits.verification import chain, records

    problems, tree = chain.check_events()
    problems += chain.check_stored_nodes(tree)
    problems += chain.check_checkpoints(tree, verification.external_checkpoints([]))
    problems += records.check_columns()
    assert_real(tree, problems, n, "after ledger.record and ledger.checkpoint")


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    args = arguments()
    if args.memory_of:
        memory_child(args)
        return
    parent = args.dir or os.environ.get("TMPDIR") or tempfile.gettempdir()
    workdir = Path(tempfile.mkdtemp(prefix="assay-bench-ledger-", dir=parent))
    try:
        run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    setup_django(workdir)
    from django.db import connection

    users = make_users()
    rng = random.Random(20261125)  # noqa: S311 - seeded test data, not cryptography
    maker = EventMaker(rng, users)
    clock = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    built = 0.0
    for index, n in enumerate(args.sizes):
        loads = [harness.load_average()]
        seconds = extend_ledger(n, maker, clock)
        built += seconds
        loads.append(harness.load_average())
        info = {
            "backend": f"sqlite {sqlite3.sqlite_version} (fresh file, {connection.vendor})",
            "build_s": round(seconds, 1),
            "db_mib": round((workdir / "bench.sqlite3").stat().st_size / harness.MIB, 1),
        }
        print(
            f"# built {n} events in {seconds:.1f} s ({info['db_mib']} MiB)",
            file=sys.stderr,
            flush=True,
        )
        measure_verification(args, n, info, loads, workdir)
        measure_proofs(args, n, random.Random(n), info, loads)  # noqa: S311 - seeded
        size = measure_checkpoints(args, n, users[index % len(users)], info, loads)
        if index == 0:
            reverify_after_real_writes(size)
        print(
            f"# {n}: done; peak RSS so far "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
