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


def test_the_demo_silences_the_gguf_loaders_progress_bar():
    """transformers' GGUF loader draws a plain tqdm bar (not the Hub's), which once filled the
    demo's "tuned version" line on a fresh machine."""
    script = (
        "import django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        "django.setup()\n"
        "from demo.management.commands.demo import quiet_libraries\n"
        "quiet_libraries()\n"
        "from tqdm.auto import tqdm\n"
        "print(tqdm(range(3), desc='Converting and de-quantizing GGUF tensors...').disable)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "de-quantizing" not in done.stderr
