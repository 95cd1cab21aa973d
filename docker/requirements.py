#!/usr/bin/env python3
"""The pip requirements of one image, read from pyproject.toml (standard library only).

    python docker/requirements.py web      everything but the microscope's torch stack, + gunicorn
    python docker/requirements.py worker   everything but torch (installed first, on its own)
    python docker/requirements.py torch    the torch requirement alone (its index differs: CPU/CUDA)

The web process never imports torch (tests/operations/test_web_without_torch.py); its image
leaves out every package of WORKER_ONLY, and tests/operations/test_docker_files.py checks that
nothing the web image installs depends on torch.
"""

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The microscope (interp_jobs.engine) and everything that pulls torch in; the web image installs
# none of it. A new dependency that needs torch belongs here (test_docker_files.py says so).
WORKER_ONLY = (
    "torch",
    "sae-lens",
    "transformers",
    "gguf",
    "peft",
    "accelerate",
    "transformer-lens",
    "nnsight",
    "circuit-tracer",
    "eai-sparsify",
)


# Installed in the web image though no pyproject.toml line names them (the workers get them
# through torch): numpy is imported at start-up by the check kinds' validators
# (interp_jobs.checks -> interp_jobs.engine.analysis.statistics).
WEB_EXTRA = ("numpy>=1.26,<3",)


def name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise SystemExit(f"cannot read the package name of {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(role: str) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    base = list(project["dependencies"])
    server = list(project.get("optional-dependencies", {}).get("server", []))
    if role == "torch":
        return [r for r in base if name(r) == "torch"]
    if role == "web":
        return [r for r in base if name(r) not in WORKER_ONLY] + server + list(WEB_EXTRA)
    if role == "worker":
        return [r for r in base if name(r) != "torch"] + server
    raise SystemExit(f"unknown role {role!r}: web, worker or torch")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print("\n".join(sorted(set(requirements(sys.argv[1])), key=name)))
