"""The console in a real headless Chromium: a simulated fault's event appears live, labelling
is refused without a token, and with one the false alarm raises the pump's threshold and the
audit log shows both.  Screenshots land in the test's tmp dir."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from edge_agent.store import Store
from gearwatch.localservers import LocalServer
from simulators.faults import Fault
from simulators.mqtt_publisher import publish_fleet
from tests.helpers import AgentThread, agent_config

pytestmark = pytest.mark.integration

TOKEN = "console-test-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed: deploy/bootstrap-system.sh")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}",
                "--window-size=900,1200"):  # about a tablet in portrait
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_console_live_event_label_with_token_audit_and_threshold(
        mosquitto: LocalServer, browser: WebDriver, tmp_path: Path) -> None:
    cfg = agent_config(
        mosquitto.port, None, "console", n_assets=3,
        agent={"site": "test", "state_dir": str(tmp_path / "state")},
        scoring={"warmup_rows": 500, "calibration_rows": 500},
        console={"tokens": [{"name": "alice",
                             "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]})
    with AgentThread(cfg) as at:
        assert at.agent is not None and at.agent.console is not None
        agent = at.agent
        url = f"http://127.0.0.1:{at.agent.console.port}/"
        stop = threading.Event()
        sim = threading.Thread(target=publish_fleet, daemon=True, kwargs=dict(
            host="127.0.0.1", port=mosquitto.port, asset_ids=["pump-1", "pump-2", "pump-3"],
            duration_s=2100, site="test", speedup=60, seed=3, qos=1, stop=stop,
            faults=[Fault("pump-2", "bearing_wear", 1500.0, 1.0, 60.0)]))
        b = browser
        wait = WebDriverWait(b, 90, poll_frequency=0.25)
        b.get(url)  # opened before the fault: the event must appear without a reload
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#assets .card")) == 3)
        assert b.find_element(By.ID, "who").text == "read-only"
        sim.start()
        try:
            row = wait.until(ec.element_to_be_clickable(
                (By.CSS_SELECTOR, "#open-events a.event")))
            assert "pump-2" in row.text
            event_id = row.get_attribute("data-event")
            assert event_id, "the event row carries its id"
            b.save_screenshot(str(tmp_path / "home.png"))
            row.click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "ev-facts"), "pump-2"))
            false_alarm = b.find_element(By.CSS_SELECTOR, 'button[data-label="false_alarm"]')
            # without a token: refused, nothing changes
            false_alarm.click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "Label refused"))
            assert "token" in b.find_element(By.ID, "flash").text
            assert agent.desk.store.audit_entries() == []
            # log in with the token and label it a false alarm
            b.find_element(By.ID, "token").send_keys(TOKEN)
            b.find_element(By.ID, "login-btn").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "who"), "logged in as alice"))
            b.find_element(By.ID, "note").send_keys("valve cycling test, not a fault")
            b.find_element(By.CSS_SELECTOR, 'button[data-label="false_alarm"]').click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "4.00 → 4.50"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "ev-label"), "False alarm"))
            wait.until(lambda d: d.execute_script(
                "const i = document.getElementById('ev-plot');"
                " return i.complete && i.naturalWidth > 0"))
            b.save_screenshot(str(tmp_path / "event.png"))
            # the audit log shows the label and the threshold change, by alice
            b.find_element(By.CSS_SELECTOR, 'nav a[href="#/audit"]').click()
            wait.until(lambda d: len(d.find_elements(
                By.CSS_SELECTOR, '#audit tr[data-action="threshold_change"]')) == 1)
            audit = b.find_element(By.ID, "audit").text
            assert "alice" in audit and "label" in audit and event_id in audit
            b.save_screenshot(str(tmp_path / "audit.png"))
            # and the asset card shows the raised threshold
            b.find_element(By.CSS_SELECTOR, 'nav a[href="#/"]').click()
            wait.until(ec.text_to_be_present_in_element(
                (By.CSS_SELECTOR, '#assets .card[data-asset="pump-2"] .thr'), "4.50"))
        finally:
            stop.set()
            sim.join(30)
    labels = Store(tmp_path / "state", readonly=True).get_event(str(event_id))  # durable
    assert labels is not None and labels["label"] == "false_alarm"
    assert labels["labels"][0]["who"] == "alice"
