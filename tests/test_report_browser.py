"""The report page in a real browser: headless Chromium driven by selenium's chromedriver.

CI installs ``chromium`` and ``chromium-driver`` from the distribution (``.ci/run``) and
``selenium`` from requirements-dev.txt; without them the test skips with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from initwise.compare import CompareConfig, run_compare, write_report

pytestmark = pytest.mark.slow


def _driver() -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements-dev.txt)")
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver_bin = shutil.which("chromedriver")
    if browser is None or driver_bin is None:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium "
                    "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1300,1000", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver_bin), options=opts)
    except Exception as e:  # a browser that cannot start here is an environment problem
        pytest.skip(f"chromium could not start: {type(e).__name__}: {str(e)[:200]}")


def test_report_renders_without_console_errors_and_toggles_work(tmp_path: Path) -> None:
    old = torch.get_num_threads()
    try:
        res = run_compare(CompareConfig(dataset="teacher", depths=[2, 3], widths=[8],
                                        schemes=["torch", "kaiming"], seeds=2, epochs=2,
                                        batch_size=128))
    finally:
        torch.set_num_threads(old)
    out = tmp_path / "rep"
    write_report(res, str(out))
    driver = _driver()
    try:
        driver.get((out / "index.html").as_uri())
        assert driver.execute_script("return document.body.getAttribute('data-charts-ready')") \
            == "1"
        errors = [m for m in driver.get_log("browser") if m.get("level") == "SEVERE"]
        assert errors == [], errors
        n_charts = driver.execute_script("return document.querySelectorAll('svg.chart').length")
        assert n_charts >= 3
        count = ("return Array.from(document.querySelectorAll('g.series'))"
                 ".filter(g => g.getAttribute('data-scheme') === arguments[0]"
                 " && getComputedStyle(g).display !== 'none').length")
        shown = driver.execute_script(count, "torch")
        assert shown >= 3 and driver.execute_script(count, "kaiming") == shown
        box = driver.find_element("css selector", "input.toggle[data-scheme='torch']")
        box.click()
        assert driver.execute_script(count, "torch") == 0
        assert driver.execute_script(count, "kaiming") == shown  # the other scheme stays
        box.click()
        assert driver.execute_script(count, "torch") == shown
        driver.find_element("id", "toggle-all").click()  # all on -> all off
        assert driver.execute_script(count, "kaiming") == 0
        driver.find_element("id", "toggle-all").click()
        assert driver.execute_script(count, "kaiming") == shown
        # Hover a point: the tooltip shows its scheme and value.
        driver.execute_script(
            "var p=document.querySelector(\"g.series[data-scheme='kaiming'] circle.pt\");"
            "var r=p.getBoundingClientRect();p.dispatchEvent(new MouseEvent('mouseenter',"
            "{clientX:r.x,clientY:r.y,bubbles:false}));")
        tip = driver.find_element("id", "tip")
        assert tip.is_displayed() and tip.text.startswith("kaiming:")
        assert "test accuracy" in tip.text
        assert driver.find_element("id", "takeaway").text.startswith("At depth")
        errors = [m for m in driver.get_log("browser") if m.get("level") == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
