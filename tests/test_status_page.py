"""The status page of the running demo service, in a real headless Chromium (selenium).

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them). In CI a
missing browser fails the test; elsewhere it is skipped with the reason. A screenshot of
the page is written to ``test-artifacts/status-page.png`` (or ``$EDGEYOLO_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_CONFIG, REPO, edgeyolo_cmd
from helpers import free_port

pytestmark = pytest.mark.slow

TOKEN = "page-test-t0ken-9f3a"  # noqa: S105 - a test value
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("EDGEYOLO_TEST_ARTIFACTS", REPO / "test-artifacts"))


def need_browser() -> None:
    """Chromium, its driver and selenium; in CI their absence is a failure, else a skip."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        msg = (
            f"no headless browser: missing {', '.join(missing)} "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def start_service(tmp_path: Path, cameras: int = 1):
    """The demo config, looping, HTTP on a free loopback port with a token; yields base url.

    ``cameras`` > 1: that many copies of the demo camera, each running only det-int8.
    """
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for cam in data["cameras"]:
        cam["source"] = str((DEMO_CONFIG.parent / cam["source"]).resolve())
    for m in data["models"]:
        m["path"] = str((DEMO_CONFIG.parent / m["path"]).resolve())
    if cameras > 1:
        demo = data["cameras"][0]
        data["cameras"] = [{"name": f"cam{i}", "source": demo["source"]} for i in range(cameras)]
        data["models"] = [m for m in data["models"] if m["name"] == "det-int8"]
    port = free_port()
    data["http"] = {"enabled": True, "host": "127.0.0.1", "port": port, "token": TOKEN}
    data["sinks"]["jsonl"] = {"enabled": False}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    log = (tmp_path / "service.log").open("w+b")
    proc = subprocess.Popen(
        edgeyolo_cmd("run", "-c", str(cfg), "--loop", "--log-format", "json"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            first = data["cameras"][0]["name"]
            code, _ = get(f"{base}/cameras/{first}/latest.jpg?token={TOKEN}")
            if code == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "service.log").read_text()
        time.sleep(0.3)
    else:
        pytest.fail("the service's HTTP endpoint did not serve a frame within 90 s")
    try:
        yield base, tmp_path / "service.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def service(tmp_path: Path):
    yield from start_service(tmp_path)


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_status_page_in_chromium(service):
    """The page loads, lists the demo camera and its four models, its live view moves; the
    API answers 401 without the token and 200 with it; the token is in no log line."""
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, log_path = service
    assert get(f"{base}/api/status")[0] == 401
    code, body = get(f"{base}/cameras/demo/latest.jpg")
    assert code == 401
    assert not body.startswith(b"\xff\xd8")
    assert get(f"{base}/api/status", {"Authorization": f"Bearer {TOKEN}"})[0] == 200

    driver = chrome()
    try:
        driver.get(f"{base}/?token={TOKEN}")
        wait = WebDriverWait(driver, 60, poll_frequency=0.3)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#models tr"))
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "article[data-camera='demo']"))
        models = [
            r.get_attribute("data-model")
            for r in driver.find_elements(By.CSS_SELECTOR, "#models tr")
        ]
        assert models == ["det-fp32", "det-int8", "pose-fp32", "pose-int8"]
        assert "det-fp32, det-int8, pose-fp32, pose-int8" in card.text
        img = card.find_element(By.CSS_SELECTOR, "img.live")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) == 960)
        assert driver.execute_script("return arguments[0].naturalHeight", img) == 540
        first = img.screenshot_as_png
        wait.until(lambda _: img.screenshot_as_png != first)  # the live view moves
        wait.until(lambda _: "fps -" not in card.text)  # the numbers arrived
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert driver.find_element(By.ID, "status").text in {"ok", "unhealthy"}
        assert driver.find_element(By.ID, "mqtt").text in {"connected", "buffering", "down"}
    finally:
        driver.quit()
    logs = log_path.read_bytes()
    assert b"http listening" in logs
    assert b'"access": "token"' in logs
    assert TOKEN.encode() not in logs


def test_many_cameras_poll_latest_jpg(tmp_path: Path):
    """Five cameras (more than a browser's connections allow as streams): every live view
    shows its camera by polling latest.jpg, and the pictures keep changing."""
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gen = start_service(tmp_path, cameras=5)
    base, _ = next(gen)
    driver = chrome()
    try:
        driver.get(f"{base}/?token={TOKEN}")
        wait = WebDriverWait(driver, 90, poll_frequency=0.5)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img.live")) == 5)
        imgs = driver.find_elements(By.CSS_SELECTOR, "img.live")
        assert all("latest.jpg" in (i.get_attribute("src") or "") for i in imgs)
        for img in imgs:
            wait.until(lambda d, i=img: d.execute_script("return arguments[0].naturalWidth", i))
        first = imgs[0].get_attribute("src")
        wait.until(lambda _: imgs[0].get_attribute("src") != first)  # it polls
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "status-page-5-cameras.png"))
    finally:
        driver.quit()
        gen.close()
