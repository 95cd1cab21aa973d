#!/usr/bin/env python3
"""The web container's health check: GET /healthz on the local gunicorn (standard library only).

It sends a Host header Django accepts (the first of ASSAY_ALLOWED_HOSTS), so host validation stays
on for everyone else. Exit 0 when healthy, 1 otherwise."""

import os
import sys
import urllib.request


def allowed_host() -> str:
    for host in os.environ.get("ASSAY_ALLOWED_HOSTS", "localhost").split(","):
        host = host.strip().lstrip(".")
        if host and host != "*":
            return host
    return "localhost"


def main() -> int:
    port = os.environ.get("ASSAY_BIND", "0.0.0.0:8000").rpartition(":")[2]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Host": allowed_host()}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
