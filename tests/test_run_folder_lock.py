"""Two writers into one run folder: the second fails at once naming the first; nothing of the
first is replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from workbench.io import RunFolderBusyError, run_folder_lock

HOLD = """
import sys, time
from workbench.io import run_folder_lock
with run_folder_lock(sys.argv[1], "notebook 00"):
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_folder(tmp_path):
    """A run folder whose writer lock another process holds (killed afterwards)."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    yield folder, holder.pid
    holder.kill()
    holder.wait()


def test_a_second_notebook_00_into_a_held_run_folder_fails_at_once_naming_the_holder(held_folder, tiny_demo_root):
    from workbench.config import load_config
    from workbench.data import prepare_run_data

    folder, pid = held_folder
    (folder / "manifest.json").write_text(json.dumps({"status": "running", "owner": "first"}))
    cfg = load_config("tiny", [f"data.data_root={tiny_demo_root}"])
    start = time.monotonic()
    with pytest.raises(RunFolderBusyError, match=rf"being written by pid {pid} on .*\(notebook 00\)"):
        prepare_run_data(cfg, folder, progress=False)
    assert time.monotonic() - start < 10  # no waiting for the holder
    assert not (folder / "manifest.parquet").exists() and not (folder / "cache").exists()
    assert json.loads((folder / "manifest.json").read_text())["owner"] == "first"


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with run_folder_lock(tmp_path, "outer"):
        with run_folder_lock(tmp_path, "inner"):
            pass
    released = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    assert released.returncode == 0 and "holding" in released.stdout


def test_a_killed_writer_leaves_the_folder_free(held_folder):
    folder, pid = held_folder
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        try:
            with run_folder_lock(folder, "second"):
                break
        except RunFolderBusyError:
            time.sleep(0.1)
    else:
        pytest.fail("the lock of a killed writer was never released")
