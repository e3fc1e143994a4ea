"""Helpers of tests/test_browser.py: Debian's Chromium under Selenium, a JupyterLab server for one test,
and the `CaseBrowser` widget as the page shows it."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from amt_core.plots.viewing import VIEWS

#: the PNG bytes of an <img> (ipywidgets sets its src to a blob: URL), base64; "" while it has none
READ_IMAGE_JS = """
const [img, done] = arguments;
if (!img.src) { done(""); return; }
fetch(img.src).then(r => r.arrayBuffer()).then(buf => {
  const bytes = new Uint8Array(buf); let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  done(btoa(s));
}).catch(() => done(""));
"""


def browser_executables() -> tuple[str, str]:
    """Debian's ``chromium`` and ``chromedriver``; the test is skipped without them, or fails when ``CI`` is
    set (so CI cannot pass without running it)."""
    found = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        reason = (
            f"{' and '.join(missing)} not found on PATH; install Debian's packages "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the browser test cannot run: {reason}")
        pytest.skip(reason)
    return found["chromium"], found["chromedriver"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, timeout: float):
    """JupyterLab serving ``root`` on a free port of 127.0.0.1 with a random token, its settings, runtime
    files and log in ``home``, no news, update checks or extension manager calls: yields
    ``(base_url, token)``; stopped (terminate, then kill) on leaving, also after a failure."""
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no news or update checks (no network, no toast over the notebook)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.collaborative=False",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    log = home / "jupyterlab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"JupyterLab did not answer on {base} within {timeout} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@contextlib.contextmanager
def headless_chromium(profile: Path):
    """A Selenium driver of Debian's headless Chromium (its own profile and driver log in ``profile``;
    Selenium Manager never runs, nothing is downloaded); quit on leaving."""
    chromium, chromedriver = browser_executables()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile / 'profile'}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        service = Service(executable_path=chromedriver, log_output=str(profile / "chromedriver.log"))
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class ExplorerPage:
    """The `CaseBrowser` widget as the page shows it (ipywidgets 8 DOM)."""

    def __init__(self, driver, on_timeout=None):
        self.driver = driver
        self.on_timeout = on_timeout  # called (e.g. a screenshot) before a wait fails

    def _labelled(self, css: str, label: str):
        for el in self.driver.find_elements(By.CSS_SELECTOR, css):
            if el.find_element(By.CSS_SELECTOR, "label.widget-label").text.strip() == label:
                return el
        raise LookupError(f"no {css} labelled {label!r} on the page")

    def widget(self):
        """The output area holding the widget."""
        images = self.driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img.widget-image")
        return images[0].find_element(By.XPATH, "ancestor::div[contains(@class, 'jp-OutputArea-output')]")

    def scroll_to_widget(self) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", self.widget())

    def images(self) -> dict[str, bytes]:
        """The PNG bytes each view's <img> shows, by view; ``{}`` until all three show one."""
        imgs = self.driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img.widget-image")
        if len(imgs) != len(VIEWS):
            return {}
        pngs = {
            v: base64.b64decode(self.driver.execute_async_script(READ_IMAGE_JS, img))
            for v, img in zip(VIEWS, imgs, strict=True)
        }
        return pngs if all(pngs.values()) else {}

    def case_select(self):
        return Select(self._labelled(".widget-dropdown", "Case").find_element(By.TAG_NAME, "select"))

    def case(self) -> str:
        """The id of the case the Case dropdown shows."""
        return self.case_select().first_selected_option.text.split()[0]

    def slider(self, view: str):
        return self._labelled(".widget-slider", view.capitalize())

    def slice(self, view: str) -> int:
        """The slice index the view's slider readout shows."""
        return int(self.slider(view).find_element(By.CSS_SELECTOR, ".widget-readout").text)

    def press_on_slider(self, view: str, key: str) -> None:
        self.slider(view).find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(key)

    def click_button(self, text: str) -> None:
        buttons = [
            b
            for b in self.driver.find_elements(By.CSS_SELECTOR, "button.jupyter-button")
            if b.text.strip() == text
        ]
        assert len(buttons) == 1, f"expected one button {text!r}, found {len(buttons)}"
        buttons[0].click()

    def click_checkbox(self, text: str) -> None:
        boxes = [
            b
            for b in self.driver.find_elements(By.CSS_SELECTOR, ".widget-checkbox")
            if b.text.strip() == text
        ]
        assert len(boxes) == 1, f"expected one checkbox {text!r}, found {len(boxes)}"
        boxes[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()

    def menu_command(self, menu: str, item: str) -> None:
        """Click ``item`` of the menu bar's ``menu``."""
        bar = [
            m for m in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if m.text == menu
        ]
        assert bar, f"JupyterLab shows no {menu} menu"
        bar[0].click()
        self.wait(
            lambda p: [
                e
                for e in p.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                if e.text.splitlines()[:1] == [item]
            ],
            30,
            f"{item!r} in the {menu} menu",
        )[0].click()

    def errors(self) -> list[str]:
        css = "[data-mime-type='application/vnd.jupyter.stderr'], [data-mime-type='application/vnd.jupyter.error']"
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css) if "Traceback" in e.text]

    def wait(self, condition, timeout: float, what: str):
        """Wait for ``condition(page)`` to be truthy and return it; a traceback in the notebook fails at once,
        a timeout fails naming ``what``."""

        def check(_):
            errors = self.errors()
            if errors:
                pytest.fail(f"the notebook shows an error while waiting for {what}:\n{errors[0][-2000:]}")
            return condition(self)

        try:
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.5,
                ignored_exceptions=(StaleElementReferenceException, LookupError),
            ).until(check)
        except TimeoutException:
            if self.on_timeout is not None:
                self.on_timeout()
            pytest.fail(f"timed out after {timeout} s waiting for {what}")


def pixels(png: bytes) -> np.ndarray:
    """A PNG as an (rows, columns, 3) uint8 RGB array."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def colour_count(rgb: np.ndarray, hex_color: str) -> int:
    """How many pixels of ``rgb`` have exactly the colour ``hex_color`` ("#RRGGBB")."""
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    return int((rgb == target).all(axis=2).sum())
