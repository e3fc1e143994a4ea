"""The case browser of `05_explore` in a real browser: JupyterLab on a finished smoke run, driven by
headless Chromium through Selenium.

The test starts JupyterLab (its own port on 127.0.0.1, a random token, settings and runtime files in a
temporary folder, no network calls), opens a copy of the run's executed `05_explore` notebook with its
outputs cleared, runs every cell from JupyterLab's *Run* menu, waits for the widget, then changes the case
(dropdown and "Next worst ▸") and the slices (keyboard on the slider handles) and checks that the image
the page shows changes each time and is exactly what `CaseBrowser.render` draws for that case and slice.

It uses Debian's ``chromium`` and ``chromedriver`` (never a browser that downloads itself). Without them
the test is skipped, except under CI (``CI`` set), where it fails. Screenshots go to the test's
``tmp_path`` and, when ``AMT_BROWSER_SHOTS`` names a folder, are copied there.
Run it with ``make test-browser`` (``pytest -m browser``).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser_support import (
    ExplorerPage,
    browser_executables,
    colour_count,
    headless_chromium,
    jupyterlab,
    pixels,
)

from amt_core.pipeline.params import NOTEBOOKS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
NOTEBOOK = "browser/05_explore.ipynb"  # the copy the test opens, relative to the run folder
KERNEL_TIMEOUT = 180  # seconds for JupyterLab to start / the kernel to run the notebook on a loaded machine
UPDATE_TIMEOUT = 60  # seconds for the kernel to answer one change of a control


# --- fixtures: a smoke run, JupyterLab on it, a headless Chromium -------------------------------------------
@pytest.fixture(scope="module")
def explored_run(tmp_path_factory) -> Path:
    """A finished smoke run (the figures step skipped: the explorer does not read it) and, in
    RUN/browser/, a copy of its executed `05_explore` notebook with the outputs cleared."""
    import nbformat

    from amt_core.pipeline.run import run_pipeline

    browser_executables()  # skip before the pipeline runs when there is no browser
    run = tmp_path_factory.mktemp("browser") / "run"
    status = run_pipeline(SMOKE, run, progress=False, steps=[nb for nb in NOTEBOOKS if nb != "04_figures"])
    assert status["05_explore"] == "ran"
    nb = nbformat.read(run / "notebooks" / "05_explore.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    (run / NOTEBOOK).parent.mkdir()
    nbformat.write(nb, run / NOTEBOOK)
    return run


@pytest.fixture(scope="module")
def lab(explored_run, tmp_path_factory):
    """JupyterLab serving the run folder, ``(base_url, token)``; stopped at the end, also after a failure."""
    from amt_core.pipeline.run import ensure_kernel

    ensure_kernel()  # the notebook's kernel runs this interpreter
    with jupyterlab(explored_run, tmp_path_factory.mktemp("jupyter"), KERNEL_TIMEOUT) as server:
        yield server


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    """Headless Chromium (Debian's), quit at the end."""
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def shots(tmp_path):
    """``save(driver_or_element, name)``: a PNG screenshot in tmp_path (and $AMT_BROWSER_SHOTS when set)."""
    copy_to = os.environ.get("AMT_BROWSER_SHOTS")

    def save(target, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        png = (
            target.screenshot_as_png
            if hasattr(target, "screenshot_as_png")
            else target.get_screenshot_as_png()
        )
        path.write_bytes(png)
        if copy_to:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, Path(copy_to) / path.name)
        return path

    return save


# --- what the page must show ---------------------------------------------------------------------------
def _expected(reference, case: str, slices: dict[str, int], prediction: bool = True) -> dict[str, np.ndarray]:
    """What `CaseBrowser.render` draws (as the widget's 8-bit PNG) for ``case`` at ``slices``."""
    reference.select_case(case)
    reference.pred_box.value = prediction
    out = {}
    for view, index in slices.items():
        reference.set_slice(view, index)
        out[view] = (reference.render(view) * 255).astype(np.uint8)
    return out


def _shows(page: ExplorerPage, expected: dict[str, np.ndarray]) -> bool:
    """Whether every view shows exactly ``expected`` (by view)."""
    shown = page.images()
    return shown.keys() == expected.keys() and all(
        np.array_equal(pixels(shown[v]), expected[v]) for v in shown
    )


# --- the test ---------------------------------------------------------------------------------------------
def test_explorer_runs_and_responds_in_jupyterlab(explored_run, lab, chrome, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from amt_core.explore import CaseBrowser
    from amt_core.pipeline.run import ensure_kernel
    from amt_core.plots.style import ROLE
    from amt_core.plots.viewing import VIEWS

    base, token = lab
    page = ExplorerPage(chrome, on_timeout=lambda: shots(chrome, "timeout"))
    reference = CaseBrowser.from_run(explored_run, split="test")  # the same run, read in this process
    order = reference.worst_cases()
    assert len(order) >= 3, f"the smoke run's test split has {len(order)} cases; the test needs 3"

    # open the notebook and run every cell from the Run menu
    chrome.get(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    page.wait(
        lambda p: len(p.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell")) >= 4,
        KERNEL_TIMEOUT,
        "JupyterLab to show the notebook",
    )
    page.wait(
        lambda p: (
            p.driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar .jp-KernelName").text
            not in ("", "No Kernel")
        ),
        KERNEL_TIMEOUT,
        "the notebook's kernel",
    )
    shots(chrome, "01_notebook_opened")
    page.menu_command("Run", "Run All Cells")

    # the widget renders, in the project's kernel, on the worst case by Dice (explore_case is empty), each
    # view exactly as CaseBrowser.render draws it
    first = page.wait(lambda p: p.images(), KERNEL_TIMEOUT, "the explorer widget's three images")
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as r:
        kernels = [s["kernel"]["name"] for s in json.load(r) if s["path"].endswith(NOTEBOOK)]
    assert kernels == [ensure_kernel()]
    page.scroll_to_widget()
    shots(chrome, "02_widget_worst_case")
    shots(page.widget(), "02_widget_worst_case_crop")
    assert page.case() == order[0]
    slices = {v: page.slice(v) for v in VIEWS}
    expected = _expected(reference, order[0], slices)
    for view in VIEWS:
        np.testing.assert_array_equal(pixels(first[view]), expected[view], err_msg=f"{order[0]} {view}")
    axial = pixels(first["axial"])
    assert len(np.unique(axial[..., 0])) > 20  # the greys of a CT window, not a flat image
    assert colour_count(axial, ROLE["prediction"]) > 0, "no prediction (orange) outline on the axial slice"

    # the prediction checkbox: off, the reference (green) outline shows whole on its largest slice; on again
    page.click_checkbox("Prediction (orange)")
    expected = _expected(reference, order[0], slices, prediction=False)
    page.wait(lambda p: _shows(p, expected), UPDATE_TIMEOUT, "the views without the prediction outline")
    axial = pixels(page.images()["axial"])
    assert colour_count(axial, ROLE["reference"]) > 0 and colour_count(axial, ROLE["prediction"]) == 0
    shots(page.widget(), "03_reference_only")
    page.click_checkbox("Prediction (orange)")
    page.wait(lambda p: p.images() == first, UPDATE_TIMEOUT, "the prediction outline back")

    # the case dropdown: another case, another image (the views re-centred on its tumour)
    other = order[-1]
    page.case_select().select_by_visible_text(
        next(o.text for o in page.case_select().options if o.text.split()[0] == other)
    )
    page.wait(
        lambda p: p.case() == other and p.images()["axial"] != first["axial"],
        UPDATE_TIMEOUT,
        f"the image of {other} after choosing it in the dropdown",
    )
    slices = {v: page.slice(v) for v in VIEWS}
    expected = _expected(reference, other, slices)
    page.wait(lambda p: _shows(p, expected), UPDATE_TIMEOUT, f"the three views of {other} at slices {slices}")
    shots(page.widget(), "04_case_from_dropdown")

    # "Next worst ▸": the browser opened on the worst case, so the next click shows the second worst
    before = page.images()
    page.click_button("Next worst ▸")
    page.wait(
        lambda p: p.case() == order[1] and p.images()["axial"] != before["axial"],
        UPDATE_TIMEOUT,
        f"the next-worst case {order[1]}",
    )
    shots(page.widget(), "05_next_worst")

    # each slice slider, moved with the keyboard, changes its view to the slice its readout shows
    for view in VIEWS:
        before = page.images()
        index = page.slice(view)
        key, step = (Keys.ARROW_LEFT, -1) if index == reference.sliders[view].max else (Keys.ARROW_RIGHT, 1)
        page.press_on_slider(view, key)
        page.wait(
            lambda p, v=view, i=index + step, old=before[view]: p.slice(v) == i and p.images()[v] != old,
            UPDATE_TIMEOUT,
            f"the {view} view at slice {index + step}",
        )
        slices = {v: page.slice(v) for v in VIEWS}
        want = _expected(reference, order[1], slices)
        page.wait(lambda p, w=want: _shows(p, w), UPDATE_TIMEOUT, f"the views at slices {slices}")
    page.scroll_to_widget()
    shots(chrome, "06_after_slices")
    shots(page.widget(), "06_after_slices_crop")
