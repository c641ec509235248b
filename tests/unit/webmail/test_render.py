"""spoolgate/webmail/render.py: the sanitizer, the CSS filter, text bodies, download names.

Outputs are checked by parsing them with html.parser (tags and attributes as a browser's
tokenizer sees them), not by looking for substrings, except where the text is the point.
"""

from __future__ import annotations

import re
import unicodedata
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.webmail.render import (
    FRAME_CSP,
    FRAME_CSP_REMOTE,
    FRAME_HEADERS,
    RenderedHtml,
    content_disposition,
    render_html,
    render_text,
)
from tests.conftest import CORPUS

SPOOLGATE = Path(__file__).resolve().parents[3] / "spoolgate"


class Document(HTMLParser):
    """Every start tag with its attributes, and the text of <style> elements."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)

    def named(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def css(self) -> list[str]:
        return self.styles + [attrs["style"] for _, attrs in self.tags if "style" in attrs]


def no_cid(content_id: str) -> str | None:
    return None


def cid_logo(content_id: str) -> str | None:
    return "/m/Q1/cid/logo%40x" if content_id == "logo@x" else None


def render(html: str, allow_remote: bool = False, cid_url=no_cid) -> RenderedHtml:
    return render_html(html, cid_url=cid_url, allow_remote=allow_remote)


def body_of(html: str, allow_remote: bool = False, cid_url=no_cid) -> Document:
    document = render(html, allow_remote, cid_url).document
    return Document(document.split("<body>", 1)[1])


ACTIVE_TAGS = {"script", "iframe", "frame", "object", "embed", "applet", "form", "input",
               "button", "select", "textarea", "meta", "base", "link", "svg", "math",
               "video", "audio", "source", "portal", "template"}
URL_ATTRIBUTES = {"href", "src", "background", "style", "action", "formaction", "data",
                  "poster", "srcset", "xlink:href", "cite", "longdesc", "ping"}
_CSS_REMOTE = re.compile(r"url\(\s*['\"]?\s*(?:https?:)?//|@import|image-set\(", re.I)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)")


def css_unescaped(css: str) -> str:
    return _CSS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2),
                           css)


def assert_inert(document: Document, allow_remote: bool) -> None:
    """No script, handler, active tag or javascript:; nothing remote unless allowed."""
    for tag, attrs in document.tags:
        assert tag not in ACTIVE_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            squeezed = re.sub(r"[\x00-\x20]", "", value).lower()
            if name in URL_ATTRIBUTES:
                assert not re.search(r"(java|vb)script:", squeezed), (tag, name, value)
            if name in ("src", "background", "href") and squeezed.startswith("data:"):
                assert tag == "img" and re.match(r"data:image/(png|gif|jpeg|webp)[;,]",
                                                 squeezed), (tag, name, value)
            if name in ("src", "background") and not allow_remote:
                assert not re.match(r"(https?:)?//", squeezed), (tag, name, value)
    if not allow_remote:
        for css in document.css():
            assert not _CSS_REMOTE.search(css_unescaped(css)), css


# -- the document and its headers -------------------------------------------------------------

def test_the_document_is_complete_with_charset_referrer_and_base_target() -> None:
    document = render("<p>Hello</p>").document
    assert document.startswith('<!doctype html><html><head><meta charset="utf-8">'
                               '<meta name="referrer" content="no-referrer">'
                               '<base target="_blank">')
    assert document.endswith("<p>Hello</p></body></html>")


def csp_directives(policy: str) -> dict[str, str]:
    parts = (item.strip().split(None, 1) for item in policy.split(";") if item.strip())
    return {part[0]: part[1] if len(part) > 1 else "" for part in parts}


def test_frame_csp_allows_no_script_and_nothing_remote() -> None:
    directives = csp_directives(FRAME_CSP)
    assert directives == {
        "default-src": "'none'", "style-src": "'unsafe-inline'", "img-src": "data: 'self'",
        "font-src": "data:", "base-uri": "'none'", "form-action": "'none'",
        "frame-ancestors": "'self'", "sandbox": "allow-popups allow-popups-to-escape-sandbox"}


def test_remote_csp_adds_http_images_styles_and_fonts_and_nothing_else() -> None:
    plain, remote = csp_directives(FRAME_CSP), csp_directives(FRAME_CSP_REMOTE)
    changed = {name for name in plain if plain[name] != remote[name]}
    assert changed == {"img-src", "style-src", "font-src"} and remote.keys() == plain.keys()
    for name in changed:
        assert remote[name] == plain[name] + " http: https:"
    assert "allow-scripts" not in remote["sandbox"] and "allow-same-origin" not in remote["sandbox"]


def test_frame_headers() -> None:
    assert FRAME_HEADERS == {
        "Content-Security-Policy": FRAME_CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "private, no-store",
        "X-Frame-Options": "SAMEORIGIN"}


def test_sanitize_false_is_used_nowhere_in_the_package() -> None:
    """The unsanitized path exists for the browser tests only: no code may reach it."""
    users = [path for path in SPOOLGATE.rglob("*.py")
             if path.name != "render.py" and re.search(r"\bsanitize\s*=", path.read_text())]
    assert users == []


def test_sanitize_false_keeps_the_html_as_it_is() -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(1)>"
    rendered = render_html(hostile, cid_url=no_cid, allow_remote=False, sanitize=False)
    assert hostile in rendered.document and rendered.remote_blocked == 0


# -- script ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("html", [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.test/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<img src=x onerror=alert(1)>",
    "<img src=x OnErRoR=alert(1)>",
    "<img/src=x/onerror=alert(1)>",
    "<body onload=alert(1)>",
    "<div onmouseover='alert(1)'>x</div>",
    "<details open ontoggle=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "<object data=javascript:alert(1)>",
    "<embed src=javascript:alert(1)>",
    "<form action=javascript:alert(1)><input type=submit></form>",
    "<button formaction=javascript:alert(1)>x</button>",
    "<input autofocus onfocus=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<marquee onstart=alert(1)>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<template><script>alert(1)</script></template>",
    "<textarea></textarea><script>alert(1)</script>",
    "<!--<img src=\"--><img src=x onerror=alert(1)//\">",
    "<style></style><img src=x onerror=alert(1)>",
    "<xmp><p title=\"</xmp><img src=x onerror=alert(1)>\"></xmp>",
])
def test_script_and_handlers_never_survive(html: str) -> None:
    assert_inert(body_of(html), allow_remote=False)
    assert_inert(body_of(html, allow_remote=True), allow_remote=True)


@pytest.mark.parametrize("html", [
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    "<svg><a xlink:href='javascript:alert(1)'><text>x</text></a></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<svg><style><img src=x onerror=alert(1)></style></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    "<math><mtext><h1><a><h6></a></h6><mglyph><svg><mtext><style><a title=\"</style>"
    "<img src onerror=alert(1)>\"></style></h1>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
])
def test_svg_and_mathml_namespace_tricks(html: str) -> None:
    document = body_of(html)
    assert_inert(document, allow_remote=False)
    assert not document.named("img") or all("src" not in a for a in document.named("img"))


# -- links --------------------------------------------------------------------------------------

@pytest.mark.parametrize("href", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
    "java\tscript:alert(1)", "java&#x09;script:alert(1)", "&#106;avascript:alert(1)",
    "javascript&colon;alert(1)", "vbscript:msgbox(1)", "data:text/html,<script>alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "//evil.test/",
    "/inbox", "../m/1/delete", "http:/m/1/delete", "file:///etc/passwd", "cid:logo@x",
])
def test_links_other_than_http_https_mailto_lose_their_href(href: str) -> None:
    document = body_of(f'<a href="{href}">click</a>')
    (link,) = document.named("a")
    assert "href" not in link
    assert "".join(document.text) == "click"


@pytest.mark.parametrize("href", ["https://example.test/a?b=1&c=2", "http://example.test/",
                                  "HTTPS://Example.test/", "mailto:alice@example.test"])
def test_links_keep_safe_targets_and_open_apart(href: str) -> None:
    (link,) = body_of(f'<a href="{href}" target="_self" rel="opener">x</a>').named("a")
    assert link == {"href": href, "target": "_blank", "rel": "noopener noreferrer"}


# -- images -------------------------------------------------------------------------------------

def test_cid_images_are_rewritten_and_unknown_ones_become_their_alt_text() -> None:
    document = body_of('<img src="cid:logo@x" alt="Logo"><img src="cid:missing" alt="Gone">'
                       '<img src="CID:logo%40x">', cid_url=cid_logo)
    assert [img["src"] for img in document.named("img")] == ["/m/Q1/cid/logo%40x"] * 2
    assert "".join(document.text) == "Gone"


def test_remote_images_are_removed_counted_and_replaced_by_alt_text() -> None:
    html = ('<img src="http://remote.test/a.png" alt="A & <B>"><img src="https://r.test/b">'
            '<img src="//r.test/c"><img src=" HTTP://r.test/d"><img src="/local">')
    rendered = render(html)
    document = Document(rendered.document.split("<body>", 1)[1])
    assert document.named("img") == [] and rendered.remote_blocked == 4
    assert "".join(document.text) == "A & <B>"


def test_remote_images_are_kept_when_the_user_asked() -> None:
    html = '<img src="http://remote.test/a.png"><img src="https://r.test/b"><img src="/local">'
    rendered = render(html, allow_remote=True)
    images = Document(rendered.document).named("img")
    assert [i["src"] for i in images] == ["http://remote.test/a.png", "https://r.test/b"]
    assert rendered.remote_blocked == 0


@pytest.mark.parametrize("src,kept", [
    ("data:image/png;base64,iVBORw0KGgo=", True), ("data:image/gif;base64,R0lGOD==", True),
    ("DATA:image/jpeg;base64,/9j/", True), ("data:image/webp;base64,UklG", True),
    ("data:image/svg+xml,<svg onload=alert(1)>", False), ("data:text/html,<script>", False),
    ("data:application/javascript,alert(1)", False), ("javascript:alert(1)", False),
])
def test_data_urls_only_raster_images(src: str, kept: bool) -> None:
    images = body_of(f'<img src="{src}">').named("img")
    assert (images == [{"src": src}]) if kept else images == []


def test_table_backgrounds_follow_the_image_rules() -> None:
    html = ('<table background="http://r.test/t.png"><tr><td background="cid:logo@x">x</td>'
            '<td background="javascript:alert(1)">y</td></tr></table>')
    rendered = render(html, cid_url=cid_logo)
    document = Document(rendered.document)
    assert "background" not in document.named("table")[0]
    assert [td.get("background") for td in document.named("td")] == ["/m/Q1/cid/logo%40x", None]
    assert rendered.remote_blocked == 1


# -- CSS ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("css", [
    "background:url(http://r.test/a.png)", "background:URL( 'https://r.test/a.png' )",
    'background-image:url("//r.test/a.png")', "background:u\\72l(http://r.test/a)",
    "background:\\75 rl(http://r.test/a)", "background:url(h\\74tp://r.test/a)",
    r"background:url(\\\\r.test/a)", "list-style:url(http://r.test/a)",
    "background-image:image-set('http://r.test/a' 1x)",
    "background-image:-webkit-image-set(url(http://r.test/a) 1x)",
    "cursor:url(http://r.test/c.cur),auto", "content:url(http://r.test/a)",
])
def test_remote_urls_in_style_attributes(css: str) -> None:
    html = f'<div style="color:red;{escape(css)}">x</div>'
    rendered = render(html)
    (div,) = Document(rendered.document).named("div")
    assert div["style"].startswith("color:red;") and not _CSS_REMOTE.search(css_unescaped(
        div["style"])) and "r.test" not in css_unescaped(div["style"])
    assert rendered.remote_blocked == 1
    kept = render(html, allow_remote=True)
    assert "r.test" in css_unescaped(Document(kept.document).named("div")[0]["style"])
    assert kept.remote_blocked == 0


def test_style_elements_lose_remote_urls_and_imports_and_keep_the_rest() -> None:
    css = ('@import url(http://r.test/a.css); @import "https://r.test/b.css";\n'
           '@IMPORT \'//r.test/c.css\' screen; @\\69mport url(http://r.test/d.css);\n'
           "body{color:#333;background:#fff url(http://r.test/bg.png) no-repeat}\n"
           "@font-face{font-family:X;src:url(https://r.test/f.woff2)}\n"
           "@media (max-width:600px){.c{background-image:url(http://r.test/m.png)}}\n"
           '.x{font-family:"\\5FAE\\8F6F"} /* url(http://r.test/comment) */')
    rendered = render(f"<style>{css}</style><p>x</p>")
    (style,) = Document(rendered.document.split("<body>", 1)[1]).styles
    assert not _CSS_REMOTE.search(css_unescaped(re.sub(r"/\*.*?\*/", "", style)))
    assert "body{color:#333;background:#fff none no-repeat}" in style
    assert "@media (max-width:600px){.c{background-image:none}}" in style
    assert '.x{font-family:"\\5FAE\\8F6F"}' in style
    assert rendered.remote_blocked == 7


def test_style_elements_keep_remote_urls_and_imports_when_the_user_asked() -> None:
    css = "@import url(http://r.test/a.css); body{background:url(https://r.test/bg.png)}"
    rendered = render(f"<style>{css}</style>", allow_remote=True)
    (style,) = Document(rendered.document.split("<body>", 1)[1]).styles
    assert '@import url("http://r.test/a.css")' in style
    assert 'background:url("https://r.test/bg.png")' in style and rendered.remote_blocked == 0


@pytest.mark.parametrize("css,expected", [
    ("background:url(javascript:alert(1))", "background:none"),
    ("background:url(/m/other/cid/x)", "background:none"),
    ("width:expression(alert(1))", "width:none"),
    ("background:url(data:image/png;base64,AAAA)", 'background:url("data:image/png;base64,AAAA")'),
    ("background:url(data:text/html,x)", "background:none"),
    ("background:url(cid:logo@x)", 'background:url("/m/Q1/cid/logo%40x")'),
    ("background:ur/**/l(http://r.test/a)", "background:ur/**/l(http://r.test/a)"),
])
def test_css_urls_other_than_data_images_and_cid_are_removed(css: str, expected: str) -> None:
    (div,) = body_of(f'<div style="{escape(css)}">x</div>', allow_remote=True,
                     cid_url=cid_logo).named("div")
    assert div["style"] == expected


def test_style_element_text_cannot_close_the_element() -> None:
    rendered = render('<style>a{b:c}</style x><style>p{}</STYLE ><img src=x onerror=alert(1)>'
                      '<p title="</style><script>alert(1)</script>">t</p>')
    document = Document(rendered.document.split("<body>", 1)[1])
    assert_inert(document, allow_remote=False)
    assert [tag for tag, _ in document.tags] == ["style", "style", "p"]


def test_nh3_escapes_angle_brackets_in_attribute_values() -> None:
    """render.py's pass over nh3's output finds tags by "<": this must stay true."""
    document = render('<p title="<style><img src=x>">t</p>').document
    assert '<p title="&lt;style&gt;&lt;img src=x&gt;">' in document


# -- removed structure ----------------------------------------------------------------------------

@pytest.mark.parametrize("html", [
    '<meta http-equiv="refresh" content="0;url=http://evil.test/">',
    '<base href="http://evil.test/">', '<link rel="stylesheet" href="http://evil.test/a.css">',
    '<link rel="dns-prefetch" href="//evil.test">', "<title>Phish</title>",
    '<meta http-equiv="Content-Security-Policy" content="default-src *">',
])
def test_head_elements_are_removed(html: str) -> None:
    document = body_of(html + "<p>kept</p>")
    assert [tag for tag, _ in document.tags] == ["p"] and "".join(document.text) == "kept"


def test_email_layout_survives() -> None:
    html = ('<table width="600" cellpadding="0" bgcolor="#ffffff" style="border:0">'
            '<tr><td align="center" valign="top" colspan="2"><font face="Arial" color="red">'
            '<b>Sale</b></font></td></tr></table><center><p class="x" id="y">Hi</p></center>')
    document = body_of(html)
    assert document.named("table") == [{"width": "600", "cellpadding": "0",
                                        "bgcolor": "#ffffff", "style": "border:0"}]
    assert document.named("td") == [{"align": "center", "valign": "top", "colspan": "2"}]
    assert document.named("font") == [{"face": "Arial", "color": "red"}]
    assert document.named("p") == [{"class": "x", "id": "y"}]


def test_lone_surrogates_do_not_raise() -> None:
    assert render("<p>x\udc80</p>").document.endswith("<p>x?</p></body></html>")
    assert render_text("x\udc80") == "x?"


# -- text bodies ----------------------------------------------------------------------------------

def test_render_text_escapes_markup() -> None:
    assert render_text('<script>alert("1")</script> & &amp;') == (
        "&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; &amp;amp;")


def test_render_text_links_http_and_https_once_escaped() -> None:
    html = render_text("Go to https://example.test/a?b=1&c=<2> now.")
    document = Document(html)
    assert document.named("a") == [{"href": "https://example.test/a?b=1&c=",
                                    "rel": "noopener noreferrer", "target": "_blank"}]
    assert "".join(document.text) == "Go to https://example.test/a?b=1&c=<2> now."
    assert "&amp;amp;" not in html


@pytest.mark.parametrize("text", [
    "javascript:alert(1)", "JAVASCRIPT://%0aalert(1)", "data:text/html,<script>",
    "ftp://example.test/", "vbscript:x", "xhttp://example.test/", "http://",
    "mailto:a@example.test", "www.example.test",
])
def test_render_text_links_nothing_else(text: str) -> None:
    document = Document(render_text(text))
    assert document.named("a") == [] and "".join(document.text) == text


def test_render_text_leaves_sentence_punctuation_out_of_links() -> None:
    html = render_text("(see http://a.test/wiki/X_(y)), and http://b.test/x.")
    hrefs = [a["href"] for a in Document(html).named("a")]
    assert hrefs == ["http://a.test/wiki/X_(y)", "http://b.test/x"]


def test_render_text_attribute_breakout_is_impossible() -> None:
    html = render_text('http://a.test/"onmouseover="alert(1) http://b.test/\'x')
    for _, attrs in Document(html).tags:
        assert set(attrs) == {"href", "rel", "target"}


# -- download names -------------------------------------------------------------------------------

def parse_disposition(value: str) -> tuple[str, str]:
    match = re.fullmatch(r"attachment; filename=\"([ -~]*)\"; filename\*=UTF-8''([!-~]*)", value)
    assert match, value
    return match.group(1), unquote(match.group(2))


@pytest.mark.parametrize("name,ascii_name,utf8_name", [
    ("report.pdf", "report.pdf", "report.pdf"),
    ("Résumé 2024.pdf", "Resume 2024.pdf", "Résumé 2024.pdf"),
    ("報告.pdf", "__.pdf", "報告.pdf"),
    ("invoice\u202egpj.exe", "invoicegpj.exe", "invoicegpj.exe"),
    ("a\u2066b\u2069c\u200b\u200fd.txt", "abcd.txt", "abcd.txt"),
    ("../../etc/passwd", "passwd", "passwd"),
    ("..\\..\\windows\\system.ini", "system.ini", "system.ini"),
    ('say "hi".txt', "say _hi_.txt", 'say "hi".txt'),
    ("100%.txt", "100_.txt", "100%.txt"),
    ("evil\r\nSet-Cookie: x=1.txt", "evilSet-Cookie: x=1.txt", "evilSet-Cookie: x=1.txt"),
    (".htaccess", "htaccess", "htaccess"),
    (None, "attachment", "attachment"),
    ("", "attachment", "attachment"),
    ("../", "attachment", "attachment"),
    ("\u202e", "attachment", "attachment"),
])
def test_content_disposition(name: str | None, ascii_name: str, utf8_name: str) -> None:
    assert parse_disposition(content_disposition(name)) == (ascii_name, utf8_name)


def test_content_disposition_fallback_and_length() -> None:
    assert parse_disposition(content_disposition(None, "message.eml")) == (
        "message.eml", "message.eml")
    ascii_name, utf8_name = parse_disposition(content_disposition("x" * 1000 + ".exe"))
    assert len(utf8_name) <= 200 and utf8_name.endswith(".exe") and ascii_name == utf8_name


# -- the shared corpus ------------------------------------------------------------------------------

def corpus_messages() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(path for path in CORPUS.rglob("*") if path.is_file())


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"mail corpus not found at "
                                                              f"{CORPUS} (set SPOOLGATE_CORPUS)")


@needs_corpus
def test_every_html_part_of_the_corpus_renders_inert() -> None:
    parts = 0
    for path in corpus_messages():
        data = path.read_bytes()
        if b"text/html" not in data.lower():
            continue
        for part in parse_message(data).html_bodies():
            for allow_remote in (False, True):
                rendered = render(part.text or "", allow_remote)
                assert_inert(Document(rendered.document.split("<body>", 1)[1]), allow_remote)
            parts += 1
    assert parts > 1000, f"only {parts} HTML parts found under {CORPUS}"


@needs_corpus
def test_every_xss_payload_line_alone_renders_inert() -> None:
    lines = (CORPUS / "xss" / "payloads.txt").read_text("utf-8", "replace").splitlines()
    for line in lines:
        for allow_remote in (False, True):
            document = render(f"<html><body>{line}</body></html>", allow_remote).document
            assert_inert(Document(document.split("<body>", 1)[1]), allow_remote)
    assert len(lines) > 6000


@needs_corpus
def test_every_corpus_attachment_name_gives_a_safe_header() -> None:
    names = 0
    for path in sorted((CORPUS / "xss" / "messages").glob("*.eml")):
        for part in parse_message(path.read_bytes()).attachments():
            ascii_name, utf8_name = parse_disposition(content_disposition(part.filename))
            for name in (ascii_name, utf8_name):
                assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name)
                assert "/" not in name and "\\" not in name and not name.startswith(".")
            names += 1
    assert names >= 50, f"only {names} attachments in the xss corpus"
