"""The upload page in a real headless Chromium, driven by Playwright, against real gunicorn."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from harness import ROOT
from harness.images import catalogue_photo, encode, garment
from harness.server import LiveServer
from service.api.page import CONTENT_SECURITY_POLICY
from tests.skips import require_program

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts" / "page"
# Debian's chromium, never a downloaded browser; no network chatter of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

# WCAG 2 contrast ratio of an element's text on the first opaque background behind it.
CONTRAST_JS = """selectors => selectors.map(selector => {
  const element = document.querySelector(selector);
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const luminance = c => {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => v / 255)
      .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let node = element;
  let background = getComputedStyle(node).backgroundColor;
  while (node && (rgb(background)[3] === 0)) {
    node = node.parentElement;
    background = node ? getComputedStyle(node).backgroundColor : "rgb(255, 255, 255)";
  }
  const [light, dark] = [luminance(getComputedStyle(element).color), luminance(background)]
    .sort((a, b) => b - a);
  return [selector, (light + 0.05) / (dark + 0.05)];
})"""

# A file dropped on the page, the way a browser builds one from the desktop.
DROP_JS = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  return transfer;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's Chromium, headless, for this module."""
    executable = require_program("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server: LiveServer) -> Iterator:
    """A fresh tab on the upload page, recording every request and console error."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1000, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.requested = []
    tab.console_errors = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    tab.on("console", lambda m: m.type == "error" and tab.console_errors.append(m.text))
    tab.on("pageerror", lambda error: tab.console_errors.append(str(error)))
    response = tab.goto("/")
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    yield tab
    context.close()


def screenshot(tab, name: str) -> Path:
    """Keep a full-page screenshot under test-artifacts/ and print where."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    tab.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def shown_model_input(tab) -> np.ndarray:
    """The pixels of the image the page shows as the model's input, read back from a canvas."""
    gray = tab.eval_on_selector(
        "#model-input",
        """img => {
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth;
          canvas.height = img.naturalHeight;
          const context = canvas.getContext("2d");
          context.drawImage(img, 0, 0);
          const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
          return Array.from({ length: rgba.length / 4 }, (_, i) => rgba[4 * i]);
        }""",
    )
    return np.array(gray, dtype=np.uint8).reshape(28, 28)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A real JPEG file: a dark garment on a white background, as a catalogue shows it."""
    path = tmp_path / "pullover.jpg"
    path.write_bytes(encode(catalogue_photo(garment(2), scale=8, pad=(60, 20)), "JPEG"))
    return path


def test_an_upload_shows_the_model_input_the_label_and_ten_bars(page, live_server, photo):
    page.get_by_label("Choose an image").set_input_files(photo)
    page.locator("#result").wait_for(state="visible")

    with photo.open("rb") as file:
        upload = [("image", (photo.name, file.read(), "image/jpeg"))]
    expected = requests.post(live_server.url + "/predict", files=upload, timeout=30).json()
    prediction = expected["predictions"][0]
    assert page.locator("#label").inner_text() == prediction["label"]

    bars = page.locator("#bars li")
    assert bars.count() == 10
    assert bars.locator(".bar-name").all_inner_texts() == list(prediction["probabilities"])
    shown = [float(t.rstrip("%")) for t in bars.locator(".bar-value").all_inner_texts()]
    assert sum(shown) == pytest.approx(100, abs=0.6)
    assert page.locator("#bars li.top .bar-name").inner_text() == prediction["label"]

    model_input = page.locator("#model-input")
    assert model_input.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    assert model_input.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    preprocessed = requests.post(live_server.url + "/preprocess", files=upload, timeout=30)
    sent = np.asarray(Image.open(io.BytesIO(preprocessed.content)))
    assert np.array_equal(shown_model_input(page), sent)

    for img in page.locator("img").all():
        assert img.get_attribute("alt"), img.evaluate("img => img.outerHTML")
    screenshot(page, "prediction.png")
    assert all(url.startswith((live_server.url, "blob:")) for url in page.requested)
    assert page.console_errors == []


def test_a_non_image_shows_the_problem_detail_in_plain_words(page, live_server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture at all\n")
    detail = requests.post(
        live_server.url + "/predict", files=[("image", ("notes.txt", b"x"))], timeout=30
    ).json()["detail"]

    page.get_by_label("Choose an image").set_input_files(notes)
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert alert.inner_text() == f"notes.txt could not be classified: {detail}"
    assert page.locator("#result").is_hidden()
    [(_, ratio)] = page.evaluate(CONTRAST_JS, ["#error"])
    assert ratio >= 4.5
    screenshot(page, "error.png")


def test_the_page_works_from_the_keyboard_and_by_drag_and_drop(page):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image-input"
    outline = page.locator("#dropzone").evaluate("label => getComputedStyle(label).outlineStyle")
    assert outline == "solid"  # the focused input shows its focus ring on the drop zone
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "invert-select"

    pixels = garment(7)
    transfer = page.evaluate_handle(
        DROP_JS, [base64.b64encode(encode(pixels)).decode(), "sneaker.png", "image/png"]
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.locator("#result").wait_for(state="visible")
    assert page.locator("#bars li").count() == 10
    first = shown_model_input(page)
    assert np.array_equal(first, pixels)  # 28x28 light on black reaches the model as is

    # Changing the background choice classifies the same file again, inverted this time.
    first_url = page.locator("#model-input").get_attribute("src")
    page.select_option("#invert-select", "true")
    page.wait_for_function(
        "first => document.querySelector('#model-input').src !== first", arg=first_url
    )
    assert np.array_equal(shown_model_input(page), 255 - first)


def test_text_contrast_meets_wcag_aa(page, photo):
    page.get_by_label("Choose an image").set_input_files(photo)
    page.locator("#result").wait_for(state="visible")
    selectors = [
        "h1",
        "header p",
        ".dropzone-title",
        ".dropzone-hint",
        "label[for=invert-select]",
        "#status",
        ".label",
        ".confidence",
        ".bar-name",
        ".bar-value",
        "figcaption",
        "footer a",
    ]
    for selector, ratio in page.evaluate(CONTRAST_JS, selectors):
        assert ratio >= 4.5, (selector, ratio)
