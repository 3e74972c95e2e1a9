"""Notebook 05 in a real browser: JupyterLab headless, Debian's Chromium driven by Playwright.

Runs all cells through the Run menu on a tiny run, changes widgets (the embedding map's
colouring, the retrieval query) and checks that what is displayed changes. Skips only when
Chromium or Playwright is absent (`make browser-deps` installs Chromium with apt-get).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
NOTEBOOK = "05_inspect.ipynb"


def _require_browser() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (`make browser-deps` needs root and apt-get)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("python playwright is not installed (pip install -e '.[dev]')")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _notebook_for(run: Path, folder: Path) -> Path:
    """A copy of notebook 05 whose injected-parameters cell (as papermill writes it) points at `run`."""
    from workbench.runs import notebook_path

    nb = nbformat.read(notebook_path("05_inspect"), as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(f'run_dir = "{run}"\nsplit = "val"\ndevice = "cpu"\n',
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(where + 1, injected)
    path = folder / NOTEBOOK
    nbformat.write(nb, path)
    return path


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab on a free localhost port, rooted in a temp folder; stopped by its process id."""
    root = tmp_path / "lab"
    root.mkdir()
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.token=", "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={root}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"JupyterLab did not start on {url}:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()


def test_notebook_05_runs_in_chromium_and_widgets_change_the_output(tiny_inspect_run, tmp_path, jupyter_lab):
    _require_browser()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, root = jupyter_lab
    run = tmp_path / "run"
    shutil.copytree(tiny_inspect_run, run)
    _notebook_for(run, root)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{NOTEBOOK}")
            # The kernel is connected only when the status bar says "| Idle" (see ENVIRONMENT.md).
            page.get_by_text("| Idle").first.wait_for(timeout=180_000)
            colour = page.locator(".wb-embedding-colour select")
            for attempt in range(2):  # Run All through the menu, one retry
                _run_all(page)
                try:
                    colour.wait_for(state="attached", timeout=240_000)
                    break
                except PlaywrightTimeout:
                    if attempt == 1:
                        raise
            page.locator(".wb-report-output").wait_for(state="attached", timeout=240_000)
            page.get_by_text("| Idle").first.wait_for(timeout=240_000)

            # 1. Re-colour the embedding map: the displayed figure must change.
            figure = page.locator(".wb-embedding-output img")
            figure.wait_for(timeout=60_000)
            before = figure.get_attribute("src")
            colour.scroll_into_view_if_needed()
            colour.select_option("split")
            page.wait_for_function(
                "(before) => { const img = document.querySelector('.wb-embedding-output img');"
                " return img !== null && img.getAttribute('src') !== before; }", arg=before, timeout=60_000)
            assert figure.get_attribute("src") != before

            # 2. A new free-text query: the result table must show it.
            results = page.locator(".wb-retrieval-output")
            old_results = results.inner_text()
            query = page.locator(".wb-retrieval-query input")
            query.scroll_into_view_if_needed()
            query.fill("large right pneumothorax")
            query.press("Enter")
            page.wait_for_function(
                "() => document.querySelector('.wb-retrieval-output').innerText.includes('large right pneumothorax')",
                timeout=60_000)
            assert results.inner_text() != old_results and "rank" in results.inner_text()

            shot = run / "inspect" / "browser-05_inspect.png"
            page.locator(".wb-embedding-output").scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            assert shot.read_bytes()[:4] == b"\x89PNG"
        finally:
            browser.close()
