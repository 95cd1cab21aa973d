"""What CI can check of the images and the compose stack without a container engine: the
files parse and name only files that exist, the web image installs nothing that needs torch,
every container runs a role of docker/entrypoint.sh that the production-process test starts,
and the entrypoint, gunicorn settings and health check behave."""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.test_production_processes import ROLES_STARTED

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = {"web": DOCKER / "web.Dockerfile", "worker": DOCKER / "worker.Dockerfile"}
OUR_IMAGES = ("assay-web:", "assay-worker:", "assay-worker-gpu:")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for word, rest in instructions(dockerfile):
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


# --- compose ----------------------------------------------------------------------------------


def test_compose_has_the_production_shape():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu", "beat"} <= set(
        services
    )
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert "--appendonly" in services["redis"]["command"]
    for name in ("postgres", "redis", "web", "worker-cpu", "worker-gpu", "worker-ops"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    volumes = set(compose()["volumes"])
    assert {"evidence", "models", "checkpoints", "pgdata", "redisdata"} <= volumes


def test_compose_builds_from_dockerfiles_that_exist():
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build is None:
            continue
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name} builds from {context}, not the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"


def test_compose_mounts_only_files_and_volumes_that_exist():
    declared = set(compose()["volumes"])
    for name, service in compose()["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("${"):
                continue  # chosen by the operator (.env), e.g. the backup folder
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_every_container_of_ours_runs_a_role_the_process_test_starts():
    roles = set()
    for name, service in compose()["services"].items():
        if not str(service.get("image", "")).startswith(OUR_IMAGES):
            continue
        command = service["command"]
        assert len(command) == 1, f"{name}: {command}"
        roles.add(command[0])
    assert roles == set(ROLES_STARTED)
    for dockerfile in DOCKERFILES.values():
        assert ("ENTRYPOINT", '["/app/docker/entrypoint.sh"]') in instructions(dockerfile)
    # The exec form runs the file itself: COPY keeps the mode git checked out.
    mode = subprocess.run(
        ["git", "ls-files", "--stage", "docker/entrypoint.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert mode == "100755", f"docker/entrypoint.sh is committed as {mode}, not executable"


def test_the_env_example_names_every_variable_compose_reads():
    # $${NAME} is the container's own variable, not compose's.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    example = (DOCKER / ".env.example").read_text()
    given = set(re.findall(r"^([A-Z0-9_]+)=", example, re.M))
    assert used <= given, f"missing from docker/.env.example: {sorted(used - given)}"


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_copy_source_exists_and_is_in_the_build_context(image):
    dockerfile = DOCKERFILES[image]
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    included = {line[1:].strip("/") for line in ignore if line.startswith("!")}
    sources = copy_sources(dockerfile)
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
        top = Path(source).parts[0]
        assert top in included, f"{source} is excluded from the build context"


def _requirements(role: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), role],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def _closure(requirements: list[str]) -> set[str]:
    """Every installed distribution the requirements pull in (markers and extras honoured)."""
    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        req = stack.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency)
        for line in requires:
            dep = Requirement(line)
            envs = [{"extra": extra} for extra in (*req.extras, "")]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                stack.append(dep)
    return names


def test_the_web_image_installs_nothing_that_needs_torch():
    web = _requirements("web")
    assert not any(canonicalize_name(Requirement(r).name) == "torch" for r in web)
    pulled = _closure(web)
    assert "django" in pulled
    assert "gunicorn" in pulled
    assert not pulled & {"torch", "transformers", "sae-lens", "peft", "gguf", "accelerate"}


def test_the_web_image_installs_only_the_web_requirements():
    runs = [rest for word, rest in instructions(DOCKERFILES["web"]) if word == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "the web image installs nothing"
    for run in installs:
        assert "requirements.py web" in run
        assert "torch" not in run
        assert not re.search(r"pip install[^&]*\s\.(\[|\s|$)", run), "installs the project"


def test_the_worker_image_installs_torch_as_pyproject_pins_it():
    assert _requirements("torch") == ["torch==2.13.0"]
    worker = _requirements("worker")
    assert "torch" not in {canonicalize_name(Requirement(r).name) for r in worker}
    assert {"sae-lens", "transformers", "gunicorn"} <= {
        canonicalize_name(Requirement(r).name) for r in worker
    }


# --- the entrypoint, gunicorn's settings and the health check --------------------------------


def entrypoint(*args: str, **env: str):
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    base.update({"ASSAY_PYTHON": sys.executable, "DJANGO_SETTINGS_MODULE": "config.settings"})
    base.update(env)
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("from-a-file-0123456789abcdefghijklmnopqrstuvwxyz\n")
    result = entrypoint(
        "manage",
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        ASSAY_SECRET_KEY_FILE=str(secret),
        ASSAY_VAR_DIR=str(tmp_path / "var"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == secret.read_text().strip()


def test_a_secret_set_twice_is_refused(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("x")
    result = entrypoint("manage", "check", ASSAY_SECRET_KEY="y", ASSAY_SECRET_KEY_FILE=str(secret))
    assert result.returncode == 64
    assert "not both" in result.stderr


def test_the_documented_compose_secrets_give_every_container_the_key_from_a_file(tmp_path):
    from tests.operations.test_operations_doc import _block

    # With the key in a file, docker/.env leaves ASSAY_SECRET_KEY empty: compose must not
    # refuse that (Django refuses a missing key itself), and the file must win.
    assert "${ASSAY_SECRET_KEY:-}" in COMPOSE.read_text()
    override = yaml.safe_load(_block("compose secrets", "yaml"))
    services = compose()["services"]
    ours = {n for n, s in services.items() if str(s.get("image", "")).startswith(OUR_IMAGES)}
    assert set(override["services"]) == ours, "a container of ours would start without the key"
    for name, extra in override["services"].items():
        assert name in services, f"the override names a service compose lacks: {name}"
        (secret,) = extra["secrets"]
        assert secret in override["secrets"]
        path = extra["environment"]["ASSAY_SECRET_KEY_FILE"]
        assert path == f"/run/secrets/{secret}"  # where compose mounts a secret

    # What the entrypoint gets in such a container: the empty variable and the file.
    key_file = tmp_path / "assay_secret_key"
    key_file.write_text("from-a-compose-secret-0123456789abcdefghijklmnopqrstuvwxyz\n")
    result = entrypoint(
        "manage",
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        ASSAY_SECRET_KEY="",
        ASSAY_SECRET_KEY_FILE=str(key_file),
        ASSAY_VAR_DIR=str(tmp_path / "var"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == key_file.read_text().strip()


def test_an_unreadable_secret_file_is_refused(tmp_path):
    result = entrypoint("manage", "check", ASSAY_SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode == 66
    assert "not readable" in result.stderr


def test_the_worker_image_installs_what_the_makefile_installs_without_dependencies():
    # Some packages are installed with --no-deps (their pins conflict with ours, yet they run
    # under ours); pyproject.toml cannot say so, so the image must repeat the Makefile.
    makefile = (ROOT / "Makefile").read_text()
    no_deps = re.findall(r"pip install[^\n]*--no-deps\s+(\S+==\S+)", makefile)
    worker = " ".join(rest for word, rest in instructions(DOCKERFILES["worker"]) if word == "RUN")
    for package in no_deps:
        assert re.search(rf"--no-deps[^&]*\s{re.escape(package)}(\s|$)", worker), package


def test_an_unknown_role_is_refused():
    result = entrypoint("webserver")
    assert result.returncode == 64
    assert "unknown role" in result.stderr


def test_gunicorn_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSAY_WEB_WORKERS", "3")
    monkeypatch.setenv("ASSAY_WEB_THREADS", "4")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    namespace: dict = {}
    exec((DOCKER / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102
    assert (namespace["workers"], namespace["threads"]) == (3, 4)
    assert namespace["worker_class"] == "gthread"
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "stale.db").write_text("from the last run")
    namespace["on_starting"](None)
    assert list((tmp_path / "prom").iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_the_container_health_check_asks_healthz(live_server):
    port = live_server.url.rsplit(":", 1)[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")},
        "ASSAY_BIND": f"0.0.0.0:{port}",
        "ASSAY_ALLOWED_HOSTS": ".localhost,testserver",
    }
    check = [sys.executable, str(DOCKER / "healthcheck.py")]
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
    env["ASSAY_BIND"] = "0.0.0.0:9"
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 1
