"""The message frame in real headless Chromium: hostile HTML runs no script and fetches nothing.

A Starlette app under uvicorn (loopback, free port) serves an outer page with a strict CSP
holding one ``<iframe sandbox="allow-popups allow-popups-to-escape-sandbox">`` per hostile
body, and each frame as ``render_html`` makes it, with ``FRAME_HEADERS``. The bodies are
every HTML part of ../shared/corpus/xss/messages, every line of xss/payloads.txt and every
H5SC vector, each line or vector in a minimal document. Before each body the frame gets a
block of vectors aimed at a beacon server on another loopback port, so requests that reach
a server are also seen by one; requests to other hosts fail to resolve (tests/browser.py)
and are seen by the browser only, through Playwright's request, requestfailed, console,
dialog and popup events. The same run with ``sanitize=False`` proves the sandbox and the
CSP hold alone; the controls prove each detector fires when a wall is missing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spoolgate.mime.parse import parse_message
from spoolgate.webmail.render import FRAME_CSP_REMOTE, FRAME_HEADERS, render_html
from tests.conftest import CORPUS
from tests.gateway_process import free_port

pytestmark = pytest.mark.integration

FRAMES_PER_PAGE = 50
OUTER_CSP = ("default-src 'self'; frame-src 'self'; script-src 'none'; style-src 'none'; "
             "img-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")
OURS = re.compile(r"/page/\w+/\w+/\d+/\d+|/frame/\w+/\w+/\d+")
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")
# What Chromium itself prints (log entries, no arguments): a wall refusing something, the
# parser's notes, failed loads (judged by the request checks). Script output has arguments
# (console.log) or is anything else; both count as script evidence.
BROWSER_MESSAGE = re.compile("|".join([
    r"Content Security Policy",
    r"because the (?:document's |element's |form's )?frame is sandboxed",
    r"The document is sandboxed",
    r"^Refused to refresh .* to a javascript: URL",
    r"URLs may not be used as base URLs for a document",
    r"^Not allowed to load local resource: ",
    r"from origin 'null' has been blocked by CORS policy",
    r"^Blocked setting the .* cookie from a `<meta>` tag",
    r"^A <\w+> tag was parsed within another <\w+> tag",
    r"^Failed to load resource: ",
    # Chromium's own notice when it drops a flood of the refusals above (the raw run makes
    # about 160,000); a script that ran would still show as a dialog, popup or request.
    r"^\d+ log entries are not shown\.$",
]))
# A request the browser never sent: stopped by the CSP or the sandbox, or not even started.
BLOCKED_FAILURES = {"csp", "net::ERR_BLOCKED_BY_CSP"}


def wrap(payload: str) -> str:
    return f"<!doctype html><html><head><title>t</title></head><body>{payload}</body></html>"


def hostile_messages() -> list[str]:
    """Every HTML body of the xss corpus messages, and every H5SC vector wrapped."""
    bodies = []
    for path in sorted((CORPUS / "xss" / "messages").glob("*.eml")):
        bodies += [part.text or "" for part in parse_message(path.read_bytes()).html_bodies()]
    bodies += [wrap(item["payload"]) for item in
               json.loads((CORPUS / "h5sc" / "items.json").read_text("utf-8"))]
    return bodies


def payload_lines() -> list[str]:
    lines = (CORPUS / "xss" / "payloads.txt").read_text("utf-8", "replace").splitlines()
    return [line for line in lines if line.strip()]


def beacon_block(beacon: str) -> str:
    """Vectors aimed at the beacon: if a wall fails, a server on loopback sees the request."""
    return (f'<img src="{beacon}/img"><img src="x" onerror="new Image().src=\'{beacon}/js\'">'
            f'<script src="{beacon}/script"></script>'
            f'<link rel="stylesheet" href="{beacon}/link">'
            f'<style>@import url({beacon}/import);p{{background:url({beacon}/css)}}</style>'
            f'<div style="background-image:url({beacon}/style)">b</div>'
            f'<iframe src="{beacon}/iframe"></iframe><object data="{beacon}/object"></object>'
            f'<meta http-equiv="refresh" content="0;url={beacon}/refresh">'
            f'<video poster="{beacon}/poster"></video><svg><image href="{beacon}/svg"/></svg>'
            f'<form action="{beacon}/form"><input type="image" src="{beacon}/input"></form>')


class Beacon:
    """An HTTP server on loopback that records the path of every request it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@dataclass(frozen=True, slots=True)
class Mode:
    """How /frame/{mode}/... is served."""

    sanitize: bool
    allow_remote: bool
    headers: bool  # FRAME_HEADERS (and the sandbox attribute on the outer page's iframes)


MODES = {"clean": Mode(True, False, True), "raw": Mode(False, False, True),
         "remote": Mode(True, True, True), "bare": Mode(False, False, False)}


def cid_url(content_id: str) -> str | None:
    return f"/cid/{quote(content_id, safe='')}" if content_id == "logo" else None


def frame_app(corpora: dict[str, list[str]], beacon: Beacon) -> Starlette:
    def outer(request: Request) -> Response:
        mode, name = request.path_params["mode"], request.path_params["corpus"]
        start, count = request.path_params["start"], request.path_params["count"]
        sandbox = f' sandbox="{SANDBOX}"' if MODES[mode].headers else ""
        frames = "".join(f'<iframe{sandbox} src="/frame/{mode}/{name}/{n}"></iframe>'
                         for n in range(start, min(start + count, len(corpora[name]))))
        page = f"<!doctype html><html><head><title>outer</title></head><body>{frames}</body></html>"
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": OUTER_CSP, "X-Content-Type-Options": "nosniff"})

    def frame(request: Request) -> Response:
        mode = MODES[request.path_params["mode"]]
        n = request.path_params["n"]
        name, here = request.path_params["corpus"], f"{beacon.url}/{n}"
        block = beacon_block(here) if name != "control" else ""
        html = block + corpora[name][n].replace("BEACON", here)
        rendered = render_html(html, cid_url=cid_url, allow_remote=mode.allow_remote,
                               sanitize=mode.sanitize)
        headers = dict(FRAME_HEADERS) if mode.headers else {}
        if mode.headers and mode.allow_remote:
            headers["Content-Security-Policy"] = FRAME_CSP_REMOTE
        return Response(rendered.document, media_type="text/html; charset=utf-8",
                        headers=headers)

    def cid(request: Request) -> Response:
        return Response(PIXEL, media_type="image/png")

    return Starlette(routes=[
        Route("/page/{mode}/{corpus}/{start:int}/{count:int}", outer),
        Route("/frame/{mode}/{corpus}/{n:int}", frame),
        Route("/cid/{name}", cid)])


class Site:
    """The frame app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Starlette) -> None:
        self.origin = f"http://127.0.0.1:{free_port()}"
        port = int(self.origin.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Observed:
    """Everything the browser reported while pages loaded."""

    requests: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    console: list[str] = field(default_factory=list)
    wall: int = 0  # browser messages
    dialogs: list[str] = field(default_factory=list)
    popups: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        if not message.args and BROWSER_MESSAGE.search(message.text):
            self.wall += 1
        else:
            self.console.append(f"{message.type}: {message.text}")


def watch(page) -> Observed:
    seen = Observed()
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("requestfailed", lambda request: seen.failures.__setitem__(
        request.url, request.failure or ""))
    page.on("requestfinished", lambda request: seen.finished.add(request.url))
    page.on("console", seen.on_console)
    page.on("dialog", lambda dialog: (seen.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("popup", lambda popup: (seen.popups.append(popup.url), popup.close()))
    return seen


@dataclass
class Harness:
    site: Site
    beacon: Beacon
    corpora: dict[str, list[str]]

    def load(self, page, mode: str, corpus: str) -> Observed:
        seen = watch(page)
        for start in range(0, len(self.corpora[corpus]), FRAMES_PER_PAGE):
            page.goto(f"{self.site.origin}/page/{mode}/{corpus}/{start}/{FRAMES_PER_PAGE}",
                      wait_until="load", timeout=60_000)
        page.goto("about:blank")  # ends anything still pending in the last batch
        return seen

    def is_ours(self, url: str) -> bool:
        """The outer pages and the frame documents, nothing else of our origin."""
        return bool(OURS.fullmatch(url.removeprefix(self.site.origin)))

    def unexpected_requests(self, seen: Observed, same_origin_allowed: bool) -> list[str]:
        """Requests other than our pages and frames (and data:) that were not blocked."""
        bad = []
        for url in seen.requests:
            if self.is_ours(url) or url.startswith(("data:", "about:")):
                continue
            if same_origin_allowed and url.startswith(self.site.origin + "/"):
                continue  # img-src 'self' in the raw run: our own origin, never elsewhere
            if seen.failures.get(url) not in BLOCKED_FAILURES:
                bad.append(f"{url} -> {seen.failures.get(url, 'sent')}")
        return bad


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    if not (CORPUS / "xss").is_dir():
        pytest.skip(f"hostile corpus not found at {CORPUS / 'xss'} (set SPOOLGATE_CORPUS)")
    corpora = {"messages": hostile_messages(), "control": CONTROLS}
    beacon = Beacon()
    beacon.thread.start()
    site = Site(frame_app(corpora, beacon))
    site.start()
    try:
        yield Harness(site, beacon, corpora)
    finally:
        site.stop()
        beacon.server.shutdown()


def report(capsys: pytest.CaptureFixture[str], what: str, started: float, count: int,
           seen: Observed) -> None:
    with capsys.disabled():
        print(f"\n{what}: {count} frames in {time.monotonic() - started:.1f} s; "
              f"{len(seen.requests)} requests, {seen.wall} wall messages")


def check_corpus(harness: Harness, page, mode: str, corpus: str,
                 capsys: pytest.CaptureFixture[str]) -> None:
    bodies = harness.corpora[corpus]
    harness.beacon.paths.clear()
    started = time.monotonic()
    seen = harness.load(page, mode, corpus)
    report(capsys, f"{mode} {corpus}", started, len(bodies), seen)
    frames = {url for url in seen.requests
              if re.fullmatch(rf"{re.escape(harness.site.origin)}/frame/{mode}/{corpus}/\d+", url)}
    assert len(frames) == len(bodies), "every frame must have been requested"
    assert seen.dialogs == [] and seen.popups == []
    assert seen.console == []
    assert harness.unexpected_requests(seen, same_origin_allowed=mode == "raw") == []
    assert harness.beacon.paths == []


@pytest.mark.parametrize("mode", ["clean", "raw"])
def test_hostile_messages_run_nothing_and_fetch_nothing(harness: Harness, page, mode: str,
                                                        capsys: pytest.CaptureFixture[str]):
    """clean: both walls; raw (sanitize=False): the sandbox and the CSP alone.

    The 530 messages hold every line of payloads.txt, in element and attribute context.
    """
    assert len(harness.corpora["messages"]) == 530 + 149
    check_corpus(harness, page, mode, "messages", capsys)


def test_the_messages_hold_every_payload_line(harness: Harness) -> None:
    text = "\n".join(harness.corpora["messages"])
    assert [line for line in payload_lines() if line not in text] == []


# -- controls: each detector fires when a wall is missing ----------------------------------------

CONTROLS = [
    "<script>alert(1)</script>",  # 0: a dialog
    "<script>console.log('script ran')</script>",  # 1: a console message
    '<a href="/popup" target="_blank">open</a>',  # 2: a popup, once clicked
    '<img src="http://remote.test/x.png"><img src="BEACON/img">',  # 3: remote images
    '<img src="cid:logo">',  # 4: an inline image from our origin
    "<img src=x onerror=\"new Image().src='BEACON/js'\">",  # 5: a request to the beacon
]


def load_control(harness: Harness, page, mode: str, index: int) -> Observed:
    seen = watch(page)
    page.goto(f"{harness.site.origin}/page/{mode}/control/{index}/1", wait_until="load")
    return seen


def test_control_without_sandbox_and_csp_script_runs(harness: Harness, page) -> None:
    harness.beacon.paths.clear()
    assert load_control(harness, page, "bare", 0).dialogs == ["1"]
    assert any("script ran" in text for text in load_control(harness, page, "bare", 1).console)
    seen = load_control(harness, page, "bare", 2)
    with page.expect_popup():
        page.frames[1].click("a")
    assert len(seen.popups) == 1
    load_control(harness, page, "bare", 5)
    assert harness.beacon.paths == ["/5/js"]


def test_control_the_same_script_is_stopped_by_the_walls(harness: Harness, page) -> None:
    harness.beacon.paths.clear()
    for index in (0, 1, 5):
        seen = load_control(harness, page, "raw", index)
        assert (seen.dialogs, seen.console, seen.popups) == ([], [], [])
        assert seen.wall > 0, "Chromium reports what the walls stopped"
    assert harness.beacon.paths == []


def test_control_remote_image_is_requested_when_allowed(harness: Harness, page) -> None:
    harness.beacon.paths.clear()
    seen = load_control(harness, page, "remote", 3)
    assert seen.failures.get("http://remote.test/x.png") == "net::ERR_NAME_NOT_RESOLVED"
    assert harness.unexpected_requests(seen, same_origin_allowed=False)
    assert "/3/img" in harness.beacon.paths
    blocked = load_control(harness, page, "clean", 3)
    assert "http://remote.test/x.png" not in blocked.requests


def test_control_cid_image_loads_from_our_origin_in_the_sandbox(harness: Harness, page) -> None:
    seen = load_control(harness, page, "clean", 4)
    assert f"{harness.site.origin}/cid/logo" in seen.finished
    assert seen.console == [] and harness.unexpected_requests(seen, True) == []


def test_counting_helpers_see_every_kind_of_request(harness: Harness) -> None:
    origin = harness.site.origin
    seen = Observed(requests=[f"{origin}/page/clean/messages/0/50", "data:image/png,",
                              "http://e/", "http://f/", f"{origin}/cid/x", "http://g/",
                              f"{origin}/frame/clean/messages/7/x"],
                    failures={"http://e/": "net::ERR_NAME_NOT_RESOLVED",
                              "http://f/": "csp", "http://g/": "net::ERR_ABORTED"})
    assert harness.unexpected_requests(seen, same_origin_allowed=False) == [
        "http://e/ -> net::ERR_NAME_NOT_RESOLVED", f"{origin}/cid/x -> sent",
        "http://g/ -> net::ERR_ABORTED", f"{origin}/frame/clean/messages/7/x -> sent"]

