"""The web demo in a real browser: headless Chromium (Debian's chromium + chromium-driver) through selenium.

The test fails, never skips, when the browser cannot start: .ci/run installs it.
"""

import os
import shutil

import pytest
from serving_support import RunningServer, request, responsive_model, scene
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tag2text.hub.inference import caption_batch

WAIT_S = 240  # the tiny model answers in seconds; the shared CI machine can be slow


def _browser():
    binary = os.environ.get("TAG2TEXT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = os.environ.get("TAG2TEXT_CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail(f"headless Chromium is required (found browser={binary}, driver={driver_path}); "
                    "install it with: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1100", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as error:
        pytest.fail(f"headless Chromium did not start: {error.msg}")


def _value(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).get_attribute("value")


def _run_and_wait(driver, previous_caption):
    driver.find_element(By.CSS_SELECTOR, "#t2t-run").click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (_value(d, "#t2t-caption textarea") or "") not in ("", previous_caption)
    )
    return _value(driver, "#t2t-caption textarea"), _value(driver, "#t2t-tags textarea")


def test_upload_in_headless_chromium_shows_tags_scores_and_caption(tokenizer, processor, tmp_path):
    model = responsive_model(tokenizer)
    image = scene(0, size=(64, 48))
    image_path = tmp_path / "upload.png"
    image.save(image_path)
    expected = caption_batch(model, processor, [image])[0]
    steered = caption_batch(model, processor, [image], tags="bus")[0]
    assert steered["caption"] != expected["caption"]  # so the page's second answer proves the steering box works

    with RunningServer(model, processor, demo=True) as server:
        driver = _browser()
        try:
            driver.get(server.url + "/")
            wait = WebDriverWait(driver, WAIT_S)
            upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#t2t-image input[type=file]"))
            assert "Tag2Text" in driver.title
            upload.send_keys(str(image_path))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#t2t-image img"))
            caption, tags = _run_and_wait(driver, previous_caption="")
            scores_text = driver.find_element(By.CSS_SELECTOR, "#t2t-scores").text
            driver.save_screenshot(str(tmp_path / "demo.png"))

            steering = driver.find_element(By.CSS_SELECTOR, "#t2t-steering textarea")
            steering.send_keys("bus")
            steered_caption, steered_tags = _run_and_wait(driver, previous_caption=caption)
            driver.save_screenshot(str(tmp_path / "demo-steered.png"))
            examples = driver.find_elements(By.CSS_SELECTOR, ".gallery-item, button.gallery-item")
        finally:
            driver.quit()
        _, stats = request(server.url + "/v1/stats")

    assert caption == expected["caption"]
    assert tags == " | ".join(expected["tags"])
    for name in expected["tags"]:
        assert name in scores_text
    assert steered_caption == steered["caption"] and steered_tags == "bus"
    assert len(examples) >= 3  # the example images drawn at start-up
    assert stats["requests"] == 2
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    print(f"screenshots: {tmp_path / 'demo.png'} {tmp_path / 'demo-steered.png'}")
