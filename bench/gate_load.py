"""The gate under load: gunicorn (docker/entrypoint.sh web, production settings) with N
concurrent clients asking a release's gate, against /healthz measured in the same run.

    .venv/bin/python bench/gate_load.py [--duration 60] [--clients 200] [--slices 3]
                                         [--web-workers N] [--no-busy] [--profile]

Issue 14, item 5: with 200 concurrent clients for 60 s, the gate's p99 latency is at most twice
the trivial view's, with zero errors; and the same with a Celery worker busy on a model check
on the same machine. The load generator is this script (Python asyncio, one connection per
client, a request sent as soon as the previous answer arrived; gunicorn's sync workers close
each connection, so every request includes its TCP connect), not wrk.

Set-up, all on this machine: a fresh PostgreSQL database (created and dropped on the server of
--postgres), migrated; a release of a tiny model whose fingerprint check passed and that two
reviewers approved (so the gate reads every kind of fact: runs, evidence, signed decisions,
keys, roles, the ledger binding); a pipeline account's token. The gate is asked with both pins,
as a pipeline asks it. Each phase's duration is split into --slices alternating slices (healthz,
gate, healthz, gate, …) so that load drift from other work hits both alike.

The busy phase starts a worker (docker/entrypoint.sh worker) and opens an evaluation running
`behavior_probe` on the demo model (SmolLM2, if in the model store; else a tiny random Llama)
with enough prompts to outlast the phase; the line says whether the check was still running
when the phase ended. --profile also runs the gate view in-process under cProfile and prints
where its time goes and how many queries it makes, and (without the profiler) what a request
answered from the facts the process keeps costs against one that reads every fact.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import harness

ROOT = harness.ROOT
BENCH = "gate_load"
GOAL = ("<=", 2.0)


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per endpoint")
    p.add_argument("--clients", type=int, default=200, help="concurrent clients")
    p.add_argument("--slices", type=int, default=3, help="alternating slices per phase")
    p.add_argument("--web-workers", type=int, default=None, help="gunicorn workers")
    p.add_argument("--no-busy", action="store_true", help="skip the busy-worker phase")
    p.add_argument("--profile", action="store_true", help="profile the gate view in-process")
    p.add_argument(
        "--postgres",
        default=os.environ.get("ASSAY_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (a database is created and dropped on it)",
    )
    p.add_argument(
        "--broker-url",
        default="filesystem://",
        help="Celery broker of the busy phase (default: the embedded one, in a temp folder)",
    )
    p.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="ASSAY_DB_CONN_MAX_AGE of the web process (compose sets 60; 0: a connection "
        "per request)",
    )
    p.add_argument("--keep", action="store_true", help="keep the database and temp folder")
    return p.parse_args()


# --- the deployment under test ----------------------------------------------------------------


def create_database(server: str) -> tuple[str, str]:
    import psycopg

    name = f"assay_gate_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{server}/{name}"


def drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def deployment_env(work: Path, database_url: str, broker_url: str, port: int, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.update(
        {
            "ASSAY_PYTHON": sys.executable,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSAY_SECRET_KEY": "gate-load-bench-secret-key-0123456789abcdefghij",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "ASSAY_BROKER_DIR": str(work / "broker"),
            "ASSAY_VAR_DIR": str(work / "var"),
            "ASSAY_MODEL_STORE": str(work / "models"),
            "ASSAY_MODEL_ROOTS": os.pathsep.join([str(work / "models"), str(demo_model_dir())]),
            "ASSAY_HTTPS": "true",
            "ASSAY_BEHIND_PROXY": "true",
            "ASSAY_ALLOWED_HOSTS": "127.0.0.1,testserver",
            "ASSAY_BIND": f"127.0.0.1:{port}",
            "ASSAY_LOG_FORMAT": "json",
            "ASSAY_ACCESS_LOG": "false",  # 200 clients' access lines would measure the log
            "ASSAY_WORKER_QUEUES": "cpu",
            "ASSAY_DB_CONN_MAX_AGE": str(args.conn_max_age),  # compose's web service: 60
            "HF_HUB_OFFLINE": "1",
        }
    )
    if args.web_workers:
        env["ASSAY_WEB_WORKERS"] = str(args.web_workers)
    return env


def demo_model_dir() -> Path:
    from subjects import DEFAULT_MODEL

    return Path(DEFAULT_MODEL).parent


def setup_django(env: dict) -> None:
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class People:
    """The personas the seeding signs as, in the shape tests/audits/reviewers.py expects."""

    def __init__(self) -> None:
        from django.contrib.auth.models import User

        from audits.roles import Role, ensure_role_groups, grant

        ensure_role_groups()
        roles = {
            "admin": Role.ADMIN,
            "submitter": Role.SUBMITTER,
            "reviewer": Role.REVIEWER,
            "reviewer2": Role.REVIEWER,
            "pipeline": Role.PIPELINE,
        }
        for name, role in roles.items():
            user = User.objects.create_user(username=name)
            grant(user, role)
            setattr(self, name, user)

    def client(self, name: str):
        from rest_framework.test import APIClient

        client = APIClient(HTTP_X_FORWARDED_PROTO="https")  # as behind the TLS proxy
        client.force_authenticate(getattr(self, name))
        return client


def seed_release(work: Path) -> tuple[dict, str]:
    """An approved release of a tiny model; the gate URL (with pins) and a pipeline token."""
    import hashlib

    from knox.models import get_token_model

    from audits import actions, current_actor
    from interp_jobs.worker.tasks import compute_model_digests, run_check
    from tests.audits.reviewers import decide, register_key

    people = People()
    model_dir = work / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    (model_dir / "tokenizer.json").write_text('{"version": "1.0"}')
    (model_dir / "model.safetensors").write_bytes(hashlib.sha256(b"w").digest() * 4096)
    model = actions.register_model_version(
        actor=people.submitter, family="tiny", version="1", source_path=str(model_dir), fmt="hf_dir"
    )
    compute_model_digests(str(model.pk))
    model.refresh_from_db()
    if not model.digests_ready:
        raise SystemExit(f"gate_load: the tiny model's digests failed: {model.digest_error}")
    draft = actions.create_policy(
        actor=people.admin,
        name="integrity",
        approvals_required=2,
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint"}],
    )
    policy = actions.publish_policy(actor=people.admin, policy=draft)
    actions.assign_policy(actor=people.admin, family="", policy_name="integrity")
    release, _ = actions.open_release(actor=people.submitter, model_version=model)
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    for who in ("reviewer", "reviewer2"):
        response = decide(people, who, register_key(people, who), release)
        if response.status_code != 201:
            raise SystemExit(f"gate_load: {who} could not sign: {response.content!r}")
    model.refresh_from_db()
    path = (
        f"/api/v1/releases/{release.pk}/gate/?policy_digest={policy.digest}"
        f"&weights_digest={model.weights_digest}"
    )
    with current_actor.acting_as(people.admin):
        token = get_token_model().objects.create(user=people.pipeline)[1]
    return {"people": people, "path": path, "release": release}, token


def open_busy_check(people) -> tuple[str, str]:
    """An evaluation whose behavior_probe outlasts the phase; returns its check run's id."""
    from subjects import DEFAULT_MODEL

    from audits import actions
    from interp_jobs.worker.tasks import compute_model_digests

    source = Path(DEFAULT_MODEL)
    if source.is_file():
        fmt, path, note = "gguf", source, "SmolLM2-135M-Instruct (GGUF)"
    else:
        from tests.factories import save_tiny_llama

        path = save_tiny_llama(Path(os.environ["ASSAY_MODEL_STORE"]) / "tiny-llama", n_layers=4)
        fmt, note = "hf_dir", "a tiny random Llama (no SmolLM2 in the model store)"
    model = actions.register_model_version(
        actor=people.submitter, family="busy", version="1", source_path=str(path), fmt=fmt
    )
    compute_model_digests(str(model.pk))
    model.refresh_from_db()
    draft = actions.create_policy(
        actor=people.admin,
        name="busy",
        approvals_required=1,
        checks=[
            {
                "key": "behaviour",
                "kind": "behavior_probe",
                "parameters": {"n_prompts": 40, "n_neutral_prompts": 40, "max_new_tokens": 96},
            }
        ],
    )
    policy = actions.publish_policy(actor=people.admin, policy=draft)
    release, _ = actions.open_release(
        actor=people.submitter,
        model_version=model,
        policy=policy,
        purpose="evaluation",
    )
    return str(release.check_runs.get().pk), note


def run_status(run_id: str) -> str:
    from audits.models import CheckRun

    return CheckRun.objects.values_list("status", flat=True).get(pk=run_id)


def start(env: dict, role: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            ["/bin/sh", str(ROOT / "docker" / "entrypoint.sh"), role],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise SystemExit(f"gate_load: {what} did not happen within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the load generator -----------------------------------------------------------------------


def request_bytes(path: str, token: str | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "X-Forwarded-Proto: https",  # what the TLS proxy in front adds
        "Accept: application/json",
    ]
    if token:
        lines.append(f"Authorization: Token {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before answering")
    status = int(status_line.split()[1])
    length, keep = 0, status_line.startswith(b"HTTP/1.1")
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and "close" in value.lower():
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _client(port: int, payloads: list, offset: int, until: float, samples, errors):
    """One client: sends its next request as soon as the previous answer arrived, cycling
    through `payloads` [(name, bytes)] from `offset`."""
    reader = writer = None
    turn = offset
    while time.monotonic() < until:
        name, payload = payloads[turn % len(payloads)]
        turn += 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 30
                )
            writer.write(payload)
            await writer.drain()
            status, keep = await asyncio.wait_for(_response(reader), 30)
            samples[name].append(time.perf_counter() - started)
            if status != 200:
                errors[name][f"HTTP {status}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[name][type(exc).__name__] += 1
            keep = False
        if not keep and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def load(port: int, payloads: list, clients: int, seconds: float) -> tuple[dict, dict, float]:
    samples: dict[str, list[float]] = {name: [] for name, _ in payloads}
    errors: dict[str, Counter] = {name: Counter() for name, _ in payloads}

    async def main():
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(port, payloads, i, until, samples, errors) for i in range(clients))
        )

    started = time.monotonic()
    asyncio.run(main())
    return samples, errors, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list, errors: Counter, seconds: float) -> dict:
    ms = [s * 1000 for s in samples]
    return {
        "requests": len(ms),
        "errors": dict(errors),
        "rps": round(len(ms) / seconds, 1) if seconds else None,
        "p50_ms": harness.sig(percentile(ms, 0.50)),
        "p90_ms": harness.sig(percentile(ms, 0.90)),
        "p99_ms": harness.sig(percentile(ms, 0.99)),
        "max_ms": harness.sig(max(ms)) if ms else None,
    }


def phase(port: int, payloads: dict, args, loads: list) -> dict:
    """Each endpoint alone, in alternating slices (healthz, gate, gate, healthz, …); every
    sample of an endpoint pooled."""
    pooled: dict[str, tuple[list, Counter, float]] = {n: ([], Counter(), 0.0) for n in payloads}
    order = list(payloads)
    for i in range(args.slices):
        for name in order[i % 2 :] + order[: i % 2]:
            samples, errors, seconds = load(
                port, [(name, payloads[name])], args.clients, args.duration / args.slices
            )
            got = pooled[name]
            pooled[name] = (got[0] + samples[name], got[1] + errors[name], got[2] + seconds)
            loads.append(harness.load_average())
    return {name: summary(*value) for name, value in pooled.items()}


def mixed(port: int, payloads: dict, args, loads: list) -> dict:
    """Both endpoints at once: every client alternates gate and healthz requests, so both wait
    in the same queue; the gap between them is then the gate's own cost."""
    samples, errors, seconds = load(port, list(payloads.items()), args.clients, args.duration)
    loads.append(harness.load_average())
    return {name: summary(samples[name], errors[name], seconds) for name in payloads}


# --- profiling --------------------------------------------------------------------------------


def profile_gate(path: str, token: str, repeats: int = 100) -> dict:
    """The gate view in this process: where the time goes, and every query with its time."""
    from collections import defaultdict

    from django.db import connection
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_FORWARDED_PROTO="https")
    client.defaults["HTTP_HOST"] = "127.0.0.1"
    if client.get(path).status_code != 200:
        raise SystemExit("gate_load: the gate does not answer 200 in-process")
    timings: dict[str, list[float]] = defaultdict(list)

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings[sql[:200]].append(time.perf_counter() - started)

    profiler = cProfile.Profile()
    started = time.perf_counter()
    with connection.execute_wrapper(timed):
        profiler.enable()
        for _ in range(repeats):
            client.get(path)
        profiler.disable()
    per_request = (time.perf_counter() - started) / repeats
    kept, fresh = _kept_and_fresh_ms(client, path, repeats)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    queries = sorted(timings.items(), key=lambda item: -sum(item[1]))
    return {
        "ms_per_request_in_process": round(per_request * 1000, 2),
        # Without the profiler: answered from kept facts (one fingerprint query) and, with
        # nothing kept, reading every fact (audits/gate_cache.py).
        "ms_per_request_kept_facts": kept,
        "ms_per_request_reading_the_facts": fresh,
        "queries_per_request": round(sum(len(t) for t in timings.values()) / repeats, 1),
        "query_ms_per_request": round(sum(map(sum, timings.values())) * 1000 / repeats, 2),
        "queries": [
            {
                "sql": sql,
                "per_request": len(t) / repeats,
                "ms_each": round(1000 * sum(t) / len(t), 3),
            }
            for sql, t in queries
        ],
        "profile_top": out.getvalue().splitlines()[:80],
    }


def _kept_and_fresh_ms(client, path: str, repeats: int) -> tuple[float, float]:
    from audits import gate_cache

    def kept():
        client.get(path)

    def fresh():
        gate_cache.forget_all()
        client.get(path)

    timings = {kept: 0.0, fresh: 0.0}
    for _ in range(repeats):  # interleaved, so that load drift hits both alike
        for ask in timings:
            started = time.perf_counter()
            ask()
            timings[ask] += time.perf_counter() - started
    return round(timings[kept] * 1000 / repeats, 2), round(timings[fresh] * 1000 / repeats, 2)


# --- the run ----------------------------------------------------------------------------------


def emit(measure: str, result: dict, worker: str, notes: str, loads: list, model: dict) -> None:
    gate, trivial = result["gate"], result["healthz"]
    ratio = harness.ratio(gate["p99_ms"], trivial["p99_ms"])
    errors = sum(gate["errors"].values()) + sum(trivial["errors"].values())
    harness.emit(
        bench=BENCH,
        measure=measure,
        value=gate["p99_ms"],
        unit="ms (p99)",
        baseline=("GET /healthz p99, same run", trivial["p99_ms"]),
        ratio=ratio,
        ratio_of="value / baseline, lower is better",
        goal=GOAL,
        model=model,
        notes=notes,
        loads=loads,
        meets_goal=bool(ratio is not None and ratio <= GOAL[1] and errors == 0),
        zero_errors=errors == 0,
        worker=worker,
        gate=gate,
        healthz=trivial,
    )


def main() -> None:
    args = arguments()
    work = Path(tempfile.mkdtemp(prefix="assay-gate-bench-"))
    db_name, database_url = create_database(args.postgres)
    port = free_port()
    env = deployment_env(work, database_url, args.broker_url, port, args)
    processes: list[subprocess.Popen] = []
    try:
        setup_django(env)
        seeded, token = seed_release(work)
        if args.profile:
            print(json.dumps({"bench": BENCH, "profile": profile_gate(seeded["path"], token)}))
            if args.duration <= 0:
                return
        web = start(env, "web", work / "web.log")
        processes.append(web)
        wait_for(lambda: _healthy(port), 120, "gunicorn answering /healthz")
        payloads = {
            "healthz": request_bytes("/healthz", None),
            "gate": request_bytes(seeded["path"], token),
        }
        model = {"web_workers": args.web_workers or "2 x cores + 1", "clients": args.clients}
        loads: list = []
        note = (
            f"{args.clients} concurrent asyncio clients (this script), {args.duration:g} s per "
            f"endpoint in {args.slices} alternating slices; gunicorn sync workers, PostgreSQL, "
            "production settings; the gate pinned to policy and weights digests."
        )
        emit(
            "gate_p99_vs_healthz_p99",
            phase(port, payloads, args, loads),
            "idle",
            note,
            loads,
            model,
        )
        loads = []
        emit(
            "gate_p99_vs_healthz_p99_mixed",
            mixed(port, payloads, args, loads),
            "idle",
            f"{args.clients} clients each alternating gate and healthz requests for "
            f"{args.duration:g} s: both endpoints measured in the same queue.",
            loads,
            model,
        )
        if not args.no_busy:
            busy(env, work, seeded, port, payloads, args, model, note, processes)
    finally:
        for process in reversed(processes):
            stop(process)
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_database(args.postgres, db_name)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and database {db_name}", file=sys.stderr)


def busy(env, work, seeded, port, payloads, args, model, note, processes) -> None:
    worker = start(env, "worker", work / "worker.log")
    processes.append(worker)
    run_id, check_note = open_busy_check(seeded["people"])
    wait_for(lambda: run_status(run_id) == "running", 600, "the busy check starting")
    loads: list = []
    result = phase(port, payloads, args, loads)
    still = run_status(run_id) == "running"
    emit(
        "gate_p99_vs_healthz_p99_worker_busy",
        result,
        "busy",
        f"{note} A Celery worker on the same machine ran behavior_probe on {check_note} "
        f"throughout: {'yes' if still else 'NO, it finished before the phase ended'}.",
        loads,
        {**model, "busy_check_running_throughout": still},
    )


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(request_bytes("/healthz", None))
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


if __name__ == "__main__":
    main()
