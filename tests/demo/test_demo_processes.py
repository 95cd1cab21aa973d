"""The demo's worker and server stop with it, pool processes included: a worker left behind
keeps polling the broker folder and can take the next demo's checks (seen: an orphaned worker
burned a core for twenty minutes while the next demo ran)."""

import os
import subprocess
import sys
import time

from demo.management.commands.demo import stop

# A parent that ignores SIGTERM and forks a child that ignores it too, like a Celery worker in
# a warm shutdown waiting on its pool.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead


def test_stop_reaches_the_whole_process_group_even_when_sigterm_is_ignored():
    parent = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(parent.stdout.readline())
    assert _alive(child)
    stop(parent, grace=0.5)
    assert parent.poll() is not None
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
