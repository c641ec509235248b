"""Safe rendering of message content for the webmail: HTML bodies, text bodies, file names.

Owns the two walls between mail from strangers and the reader's session. The first is
:func:`render_html`: nh3 (ammonia) with an explicit allow-list of email tags and
attributes, URL policies per attribute (links http/https/mailto only; images from cid:
parts, raster data: URLs, and remote http(s) only when the user asked), and a small CSS
filter for ``style`` attributes and ``<style>`` elements that nh3 does not parse. The
second is the frame the result is shown in: a document of its own, served with
:data:`FRAME_HEADERS` (a CSP that allows no script and nothing remote, its own
``sandbox``) inside an ``<iframe sandbox>`` without ``allow-scripts`` or
``allow-same-origin``. Either wall alone must hold; the browser tests prove both.

It also owns :func:`render_text` (a text part as escaped HTML with http(s) links) and
:func:`content_disposition` (RFC 6266 download names without bidi or path tricks).

How it fails: every function is pure and never raises for any ``str`` input (lone
surrogates are replaced); what the filters cannot make safe is dropped, never kept. An
exception raised by the caller's ``cid_url`` propagates.
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote, unquote

import nh3

_BASE_CSP = {
    "default-src": "'none'",
    "style-src": "'unsafe-inline'",
    "img-src": "data: 'self'",
    "font-src": "data:",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'self'",
    "sandbox": "allow-popups allow-popups-to-escape-sandbox",
}
_REMOTE_SOURCES = {"style-src": " http: https:", "img-src": " http: https:",
                   "font-src": " http: https:"}


def _policy(extra: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}{extra.get(name, '')}" for name, value in _BASE_CSP.items())


FRAME_CSP = _policy({})
"""The message frame's CSP: no script, nothing fetched but data: and our own cid images.

``default-src 'none'`` covers script, connect, object, media, frame, worker and manifest
fetches; ``style-src 'unsafe-inline'`` lets the message's own CSS apply (it can fetch
nothing: ``img-src`` and ``font-src`` say where images and fonts may come from);
``img-src 'self'`` is for the cid endpoint; ``base-uri``, ``form-action`` and
``frame-ancestors`` do not fall back to ``default-src``, so they are set explicitly;
``sandbox`` keeps the document scriptless and of an opaque origin even when its URL is
opened top-level, where the iframe's ``sandbox`` attribute does not apply.
"""
FRAME_CSP_REMOTE = _policy(_REMOTE_SOURCES)
"""As :data:`FRAME_CSP`, plus images, stylesheets and fonts over http(s): still no script."""
FRAME_HEADERS: dict[str, str] = {
    "Content-Security-Policy": FRAME_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "X-Frame-Options": "SAMEORIGIN",
}
"""What the frame endpoint sends (with :data:`FRAME_CSP_REMOTE` when remote is allowed)."""

_DOCUMENT_HEAD = (
    '<!doctype html><html><head><meta charset="utf-8">'
    '<meta name="referrer" content="no-referrer"><base target="_blank">'
    "<style>body{margin:0;padding:8px;overflow-wrap:break-word}</style></head><body>")
_DOCUMENT_TAIL = "</body></html>"

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
TAGS = frozenset({
    "a", "abbr", "acronym", "address", "article", "aside", "b", "bdi", "bdo", "big",
    "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer",
    "header", "hr", "i", "img", "ins", "kbd", "li", "main", "mark", "ol", "p", "pre", "q",
    "rp", "rt", "ruby", "s", "samp", "section", "small", "span", "strike", "strong", "style",
    "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr",
    "tt", "u", "ul", "var", "wbr", *_HEADINGS})
"""Tags kept. Everything else is removed and its text kept, except :data:`DROPPED_TAGS`."""
DROPPED_TAGS = frozenset({
    "script", "noscript", "template", "title", "iframe", "frame", "frameset", "noframes",
    "object", "embed", "applet", "noembed", "xmp", "textarea", "select", "svg", "math"})
"""Tags removed together with their content."""
_TABLE_PART = frozenset({"background"})
_CELL = frozenset({"abbr", "background", "colspan", "headers", "nowrap", "rowspan", "scope"})
ATTRIBUTES: Mapping[str, frozenset[str]] = MappingProxyType({
    "*": frozenset({"align", "bgcolor", "class", "dir", "height", "id", "lang", "style",
                    "title", "valign", "width"}),
    "a": frozenset({"href", "name"}),
    "img": frozenset({"alt", "border", "hspace", "src", "vspace"}),
    "table": frozenset({"background", "border", "cellpadding", "cellspacing", "frame",
                        "rules", "summary"}),
    "tbody": _TABLE_PART, "thead": _TABLE_PART, "tfoot": _TABLE_PART, "tr": _TABLE_PART,
    "td": _CELL, "th": _CELL,
    "col": frozenset({"span"}), "colgroup": frozenset({"span"}),
    "font": frozenset({"color", "face", "size"}),
    "ol": frozenset({"reversed", "start", "type"}), "ul": frozenset({"type"}),
    "li": frozenset({"type", "value"}), "hr": frozenset({"noshade", "size"}),
    "del": frozenset({"datetime"}), "ins": frozenset({"datetime"}),
    "time": frozenset({"datetime"}), "details": frozenset({"open"}),
})
"""Attributes kept per tag (``*``: on every kept tag); no event handlers, no srcset."""
_URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})  # nh3's first cut; ours is below

_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpeg|webp)[;,]")
_DATA_CSS = re.compile(r"data:(?:image/(?:png|gif|jpeg|webp)|font/[a-z0-9.+-]+"
                       r"|application/(?:x-)?font-[a-z0-9.+-]+)[;,]")
_REMOTE = re.compile(r"(?:https?:)?//")
_ABSOLUTE_HTTP = re.compile(r"https?://[^/?#]")
_REMOTE_HOST = re.compile(r"(?:https?:)?//[^/?#]")
_URL_IGNORED = re.compile(r"[\t\n\r]")
_URL_STRIPPED = "".join(map(chr, range(0x21)))


def _normalized_url(value: str) -> str:
    """The URL as a browser reads it, for classification: trimmed, no tab/newline, lower case."""
    return _URL_IGNORED.sub("", value).strip(_URL_STRIPPED).replace("\\", "/").lower()


@dataclass(frozen=True, slots=True)
class RenderedHtml:
    """A complete document for the message frame and how many remote references it lost."""

    document: str
    remote_blocked: int


class _UrlPolicy:
    """Which URLs one rendering keeps; counts the remote ones it removes."""

    def __init__(self, cid_url: Callable[[str], str | None], allow_remote: bool) -> None:
        self.cid_url = cid_url
        self.allow_remote = allow_remote
        self.remote_blocked = 0
        self.rewritten: set[str] = set()  # cid_url's answers, kept when CSS is checked again

    def image(self, value: str, data: re.Pattern[str] = _DATA_IMAGE) -> str | None:
        """An image URL kept as given, rewritten (cid:), or None to remove it."""
        raw = _URL_IGNORED.sub("", value).strip(_URL_STRIPPED)
        url = raw.replace("\\", "/").lower()
        if url.startswith("cid:"):
            return self._cid(unquote(raw[4:]))
        if data.match(url) or value in self.rewritten:
            return value
        return self.remote(value, url)

    def _cid(self, content_id: str) -> str | None:
        url = self.cid_url(content_id)
        if url is not None:
            self.rewritten.add(url)
        return url

    def remote(self, value: str, url: str) -> str | None:
        if not _REMOTE.match(url):
            return None  # relative, javascript:, other schemes: never fetched
        if not self.allow_remote:
            self.remote_blocked += 1
            return None
        return value if _REMOTE_HOST.match(url) else None

    def link(self, value: str) -> str | None:
        url = _normalized_url(value)
        if url.startswith("mailto:") or _ABSOLUTE_HTTP.match(url):
            return value
        return None

    def attribute(self, tag: str, name: str, value: str) -> str | None:
        """nh3's attribute_filter: the value to keep, or None to drop the attribute."""
        if name == "style":
            return _filter_css(value, self) or None
        if name == "background" or (tag == "img" and name == "src"):
            return self.image(value)
        if tag == "a" and name == "href":
            return self.link(value)
        return value


def render_html(html: str, *, cid_url: Callable[[str], str | None], allow_remote: bool,
                sanitize: bool = True) -> RenderedHtml:
    """The HTML body as a complete document for the sandboxed message frame.

    ``cid_url`` maps a Content-ID to the URL that serves that inline image (None removes
    the image). ``sanitize=False`` skips the first wall: it exists ONLY so the browser
    tests can prove the sandbox and CSP hold on their own. It must never be reachable
    from configuration, a request or any code path outside the tests.
    """
    html = _scrub(html)
    if not sanitize:
        return RenderedHtml(_DOCUMENT_HEAD + html + _DOCUMENT_TAIL, 0)
    policy = _UrlPolicy(cid_url, allow_remote)
    body = nh3.clean(
        html, tags=TAGS, clean_content_tags=DROPPED_TAGS, attributes=dict(ATTRIBUTES),
        attribute_filter=policy.attribute, url_schemes=_URL_SCHEMES, strip_comments=True,
        link_rel="noopener noreferrer", set_tag_attribute_values={"a": {"target": "_blank"}})
    body = _SERIALIZED.sub(lambda match: _after_clean(match, policy), body)
    return RenderedHtml(_DOCUMENT_HEAD + body + _DOCUMENT_TAIL, policy.remote_blocked)


# nh3's output is canonical: attribute values double-quoted with <, > and " escaped, text
# with < escaped, so a raw "<" starts a real tag except inside <style>, whose text is raw.
_SERIALIZED = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)|<img\b[^>]*>", re.S)
_ALT = re.compile(r' alt="([^"]*)"')


def _after_clean(match: re.Match[str], policy: _UrlPolicy) -> str:
    """Filter a <style> element's CSS; replace an image left without a source by its alt."""
    if match.group(1) is not None:
        return match.group(1) + _filter_css(match.group(2), policy) + match.group(3)
    tag = match.group(0)
    if ' src="' in tag:
        return tag
    alt = _ALT.search(tag)
    return alt.group(1) if alt else ""  # the serialized value is already escaped text


# -- CSS ------------------------------------------------------------------------------------
# Not a CSS parser: a tokenizer that finds, as a browser would (CSS Syntax 3, escapes
# decoded, comments and strings skipped), every place where CSS can name a URL: url(),
# functions taking URL strings, and @import. Everything else is copied unchanged.

_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_STRING = re.compile(r"\"(?:[^\"\\\n\r\f]|\\.|\\\Z)*(?:\"|(?=[\n\r\f])|\Z)"
                     r"|'(?:[^'\\\n\r\f]|\\.|\\\Z)*(?:'|(?=[\n\r\f])|\Z)", re.S)
_ESCAPE_SOURCE = r"\\(?:[0-9a-fA-F]{1,6}[ \t\n\r\f]?|[^\n\r\f0-9a-fA-F])"
_IDENT = re.compile(rf"(?:[A-Za-z0-9_\-\u0080-\U0010ffff]|{_ESCAPE_SOURCE})+")
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\r\n|[\n\r\f])|(.))", re.S)
_URL_STRING_FUNCTIONS = frozenset({"image-set", "-webkit-image-set", "image", "-webkit-image",
                                   "cross-fade", "-webkit-cross-fade", "src", "element",
                                   "-moz-element"})
_SCRIPT_URL = re.compile(r"(?:java|vb|live)script:")
_NEVER_FUNCTIONS = frozenset({"expression"})  # old IE: script in CSS
_URL_SAFE = re.compile(r"[^A-Za-z0-9/._~%:?#&=+@!$,;-]")


def _unescape(text: str) -> str:
    """CSS escapes decoded (\\75 rl -> url), as the tokenizer decodes them."""
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            code = int(match.group(1), 16)
            return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF \
                else "\ufffd"
        return "" if match.group(2) else match.group(3)
    return _ESCAPE.sub(one, text)


def _filter_css(css: str, policy: _UrlPolicy) -> str:
    """``css`` with every URL the policy refuses replaced by ``none``, @import removed.

    The result is filtered again; if that changes anything (the pieces joined into
    something new), the whole text is dropped rather than trusted.
    """
    once = _css_pass(css, policy)
    counted = policy.remote_blocked
    twice = _css_pass(once, policy)
    policy.remote_blocked = counted
    return once if twice == once else ""


def _css_pass(css: str, policy: _UrlPolicy) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(css):
        piece, pos = _css_token(css, pos, policy)
        out.append(piece)
    return "".join(out)


def _css_token(css: str, pos: int, policy: _UrlPolicy) -> tuple[str, int]:
    """The text to emit for the token at ``pos`` and where the next one starts."""
    match = _COMMENT.match(css, pos)
    if match:
        return match.group(), match.end()
    match = _STRING.match(css, pos)
    if match:
        return _css_string(match.group()), match.end()
    if css[pos] == "@":
        ident = _IDENT.match(css, pos + 1)
        if ident and _unescape(ident.group()).lower() == "import":
            return _import_rule(css, pos, policy)
        return ("@" + ident.group(), ident.end()) if ident else ("@", pos + 1)
    ident = _IDENT.match(css, pos)
    if ident is None:
        return css[pos], pos + 1
    end = ident.end()
    if end < len(css) and css[end] == "(":
        return _function(css, pos, end, _unescape(ident.group()).lower(), policy)
    return ident.group(), end


def _css_string(string: str) -> str:
    """A string token, emptied if it names a script URL (old Opera's -o-link and the like)."""
    squeezed = re.sub(r"[\x00-\x20]", "", _unescape(string)).lower()
    return '""' if _SCRIPT_URL.search(squeezed) else string


def _function(css: str, start: int, paren: int, name: str,
              policy: _UrlPolicy) -> tuple[str, int]:
    if "url" in name:  # url(), and anything named like it (none\20url() is one ident): no risk
        end = _balanced_end(css, paren)
        kept = _css_url(css[paren + 1:end - 1] if css[end - 1] == ")" else css[paren + 1:end],
                        policy)
        return (kept if kept is not None else "none"), end
    if name in _NEVER_FUNCTIONS or (name in _URL_STRING_FUNCTIONS and not policy.allow_remote):
        if name in _URL_STRING_FUNCTIONS:
            policy.remote_blocked += 1
        return "none", _balanced_end(css, paren)
    return css[start:paren + 1], paren + 1  # arguments are scanned as tokens of their own


def _css_url(argument: str, policy: _UrlPolicy) -> str | None:
    """``url(...)`` to emit for the argument of a url() function, or None to remove it."""
    text = argument.strip(" \t\n\r\f")
    if text[:1] in ("'", '"'):
        text = text[1:-1] if len(text) > 1 and text[-1] == text[0] else text[1:]
    value = _unescape(text)
    kept = policy.image(value, data=_DATA_CSS)
    if kept is None:
        return None
    return 'url("' + _URL_SAFE.sub(lambda m: f"\\{ord(m.group()):x} ", kept) + '")'


def _balanced_end(css: str, paren: int) -> int:
    """The index after the ``)`` that closes the ``(`` at ``paren`` (or the end of css)."""
    depth = 0
    pos = paren
    while pos < len(css):
        match = _STRING.match(css, pos) or _COMMENT.match(css, pos)
        if match and match.end() > pos:
            pos = match.end()
            continue
        char = css[pos]
        pos += 2 if char == "\\" else 1
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return min(pos, len(css))
    return len(css)


def _import_rule(css: str, start: int, policy: _UrlPolicy) -> tuple[str, int]:
    """An @import rule: kept when remote content is allowed, else removed up to its ``;``."""
    if policy.allow_remote:
        return "@", start + 1  # its url() or string is scanned as tokens of its own
    policy.remote_blocked += 1
    pos = start + 1
    while pos < len(css):
        match = _STRING.match(css, pos) or _COMMENT.match(css, pos)
        if match and match.end() > pos:
            pos = match.end()
        elif css[pos] == "(":
            pos = _balanced_end(css, pos)
        elif css[pos] in ";}":
            return "", pos + (css[pos] == ";")
        else:
            pos += 2 if css[pos] == "\\" else 1
    return "", len(css)


# -- text and file names ----------------------------------------------------------------------

_TEXT_URL = re.compile(r"(?<![\w.+-])https?://[^\s<>\"'`\x00-\x1f\x7f]+", re.I)
_TRAILING = ".,:;!?'\"*)]}>"
_PAIRS = {")": "(", "]": "[", "}": "{"}


def render_text(text: str) -> str:
    """A text part as HTML for a pre-wrap block: escaped, with its http(s) URLs as links.

    The text is split at URLs first and every piece escaped exactly once (URL, link text
    and the text between), so nothing is escaped twice and no markup can get in.
    """
    text = _scrub(text).replace("\x00", "\ufffd")
    out: list[str] = []
    pos = 0
    for match in _TEXT_URL.finditer(text):
        url = _trim_url(match.group())
        if not _ABSOLUTE_HTTP.match(url.lower()):
            continue
        out.append(html_lib.escape(text[pos:match.start()]))
        out.append(f'<a href="{html_lib.escape(url)}" rel="noopener noreferrer" '
                   f'target="_blank">{html_lib.escape(url)}</a>')
        pos = match.start() + len(url)
    out.append(html_lib.escape(text[pos:]))
    return "".join(out)


def _trim_url(url: str) -> str:
    """Punctuation that ends a sentence is not part of the URL; a closing bracket that
    closes one inside the URL is."""
    while url and url[-1] in _TRAILING:
        last = url[-1]
        if last in _PAIRS and url.count(_PAIRS[last]) >= url.count(last):
            break
        url = url[:-1]
    return url


_NAME_MAX = 200
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control, format (bidi overrides and isolates, zero-width), surrogate, line separators."""


def content_disposition(filename: str | None, fallback: str = "attachment", *,
                        inline: bool = False) -> str:
    """An RFC 6266 header value: ``attachment`` (or ``inline``), an ASCII ``filename`` and
    a UTF-8 ``filename*``.

    The name loses any directory part, control and bidi/zero-width characters, and
    leading dots; the ASCII form also loses quotes, backslashes and percent signs.
    ``fallback`` (an ASCII name) is used when nothing is left.
    """
    name = _clean_name(filename or "") or _clean_name(fallback) or "attachment"
    ascii_name = _ascii_name(name) or _ascii_name(fallback) or "attachment"
    encoded = quote(name, safe="!#$&+-.^_`|~")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _clean_name(name: str) -> str:
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _INVISIBLE)
    name = re.split(r"[/\\]", name)[-1].strip().lstrip(".").rstrip(". ")
    if len(name) > _NAME_MAX:
        stem, dot, suffix = name.rpartition(".")
        keep = dot + suffix if stem and len(suffix) < 16 else ""
        name = name[:_NAME_MAX - len(keep)] + keep
    return name


def _ascii_name(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name)
    chars = (ch if " " <= ch <= "~" and ch not in "\"\\%" else "_"
             for ch in folded if not unicodedata.combining(ch))
    return _clean_name("".join(chars))


def _scrub(text: str) -> str:
    """``text`` without lone surrogates, which cannot be encoded (nh3 would raise)."""
    return text.encode("utf-8", "replace").decode("utf-8")
