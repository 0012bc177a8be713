"""The chat page at ``/``, loaded in headless Chromium (skipped where none is installed): it streams an answer, the
same one the API gives for the seed, and shows tokens per call.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages ending in
NUL on file descriptors 3 and 4), which needs nothing beyond the browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse

import pytest

from test_serve_app import NAME, LiveServer, write_model

BROWSER = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
               None)  # fmt: skip
pytestmark = [pytest.mark.slow, pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")]

#: A seed whose answer runs to max_tokens (some seeds sample the end token within a few tokens).
SEED = 4

#: What the test reads from the page once its answer is complete.
READ_PAGE = """JSON.stringify({
    state: document.body.dataset.state,
    answer: document.querySelector('.assistant').dataset.answer,
    calls: document.querySelectorAll('.assistant span').length,
    stats: (document.querySelector('.stats') || {}).textContent,
})"""


class DevTools:
    """A headless Chromium and a DevTools session on one page."""

    def __init__(self, url: str, profile: str):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def descriptors():  # the protocol's pipe ends are the child's fds 3 (commands) and 4 (replies)
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=descriptors, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # replies to other ids and events are skipped
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)["result"].get(
            "value"
        )

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model, adapter = write_model(tmp_path_factory.mktemp("served"))
    live = LiveServer(["--model", str(model), "--adapter", str(adapter), "--served-model-name", NAME],
                      tmp_path_factory.mktemp("log") / "server.log")  # fmt: skip
    yield live
    live.stop()


def test_the_page_streams_the_seeded_answer_and_shows_tokens_per_call(server, tmp_path):
    query = urllib.parse.urlencode({"prompt": "w9 w10 w11", "seed": SEED, "max_tokens": 40})
    browser = DevTools(f"{server.url}/?{query}", str(tmp_path / "profile"))
    try:
        deadline = time.monotonic() + 60
        while browser.evaluate("document.body.dataset.state || ''") not in ("done", "error"):
            assert time.monotonic() < deadline, "the page did not finish its answer"
            time.sleep(0.05)
        page = json.loads(browser.evaluate(READ_PAGE))
    finally:
        browser.close()
    api = server.client().chat.completions.create(model=NAME, messages=[{"role": "user", "content": "w9 w10 w11"}],
                                                  seed=SEED, max_tokens=40)  # fmt: skip
    assert page["state"] == "done", page
    assert page["answer"] == api.choices[0].message.content
    assert api.choices[0].finish_reason == "length"  # the seed gives an answer long enough to stream
    assert page["calls"] > 1  # streamed: one coloured piece per forward call
    usage = api.usage.model_dump()
    assert f"{usage['completion_tokens']} tokens in {usage['forward_calls']} forward calls" in page["stats"]
