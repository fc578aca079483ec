"""The upload page's assets as served: errors under /static/ are plain text (a browser loads these
URLs, not an API client), and the page says clearly when its upload widget could not load, in an
element of its own that the gallery's refresh does not clear."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import requests

from tests.support import ROOT
from tests.test_browser import CHROMIUM, browser_missing, short_temp_dir
from tests.test_js_clients import JS, NODE, PASSWORD, node_env, parse_output

STATIC = ROOT / "gateway" / "static"


@pytest.fixture(scope="module")
def page_gateway(start_gateway):
    return start_gateway("local")


@pytest.mark.parametrize("path", ["/static/nothing-here.js", "/static/vendor/missing.min.js", "/static/%2e%2e/app.py"])
def test_static_errors_are_plain_text_not_json(page_gateway, path):
    response = requests.get(page_gateway.url + path, timeout=10)
    assert response.status_code in (403, 404), path
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
    assert response.text.startswith(f"{response.status_code} ")
    assert "{" not in response.text, "no JSON body"
    # still the gateway's answer: request id, security headers, never cached
    assert "X-Request-Id" in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_static_404_exact_answer_and_head(page_gateway):
    response = requests.get(page_gateway.url + "/static/nothing-here.js", timeout=10)
    assert (response.status_code, response.text) == (404, "404 Not Found\n")
    head = requests.head(page_gateway.url + "/static/nothing-here.js", timeout=10)
    assert head.status_code == 404 and head.headers["Content-Type"].startswith("text/plain") and head.content == b""


def test_wrong_method_on_an_asset_is_plain_text(page_gateway):
    response = requests.post(page_gateway.url + "/static/app.js", timeout=10)
    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.startswith("405 ")


def test_api_errors_stay_json(page_gateway):
    response = requests.get(page_gateway.url + "/api/media", timeout=10)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "token_missing"


def test_page_has_the_widget_message_element(page_gateway):
    html = requests.get(page_gateway.url + "/", timeout=10).text
    element = re.search(r'<p id="uploader-error"[^>]*>', html)
    assert element, "the upload section has its own message element"
    assert 'role="alert"' in element.group(0) and "hidden" in element.group(0)
    # inside the upload section, before the widget's container
    section = html[html.index('id="upload-title"'):html.index('id="gallery-title"')]
    assert section.index('id="uploader-error"') < section.index('id="uploader"')


def test_app_js_reports_the_missing_widget_where_nothing_clears_it(page_gateway):
    script = requests.get(page_gateway.url + "/static/app.js", timeout=10).text
    start = script.index("function startUploader")
    uploader = script[start:script.index("\n  }\n", start)]
    assert re.search(r"showError\('uploader-error', 'The upload widget could not be loaded", uploader)
    assert "could not be loaded" not in script.replace(uploader, ""), "the message is written in one place"
    # the only other writes to uploader-error are in startUploader (clearing it once Uppy is there)
    assert script.count("'uploader-error'") == uploader.count("'uploader-error'")
    refresh = script[script.index("async function refreshGallery"):]
    assert "uploader-error" not in refresh


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
def test_browser_shows_the_message_when_the_bundle_is_missing(page_gateway, tmp_path):
    temp = short_temp_dir()
    try:
        result = subprocess.run(
            [NODE, str(JS / "widget_missing.mjs")], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=node_env(GATEWAY_URL=page_gateway.url, USERNAME="nowidget-" + os.urandom(4).hex(),
                         PASSWORD=PASSWORD, CHROMIUM=CHROMIUM, TMPDIR=temp),
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = parse_output(result.stdout)[0]
    assert report["blocked"] and not report["uppyLoaded"]
    for moment in ("afterSignIn", "afterRefresh"):
        message = report[moment]
        assert message["visible"] and not message["hidden"], (moment, message)
        assert "The upload widget could not be loaded" in message["text"]
    assert report["galleryError"] == ""
