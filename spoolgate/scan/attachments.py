"""Attachment rules of the built-in scanner, on the one parse of a message.

Owns the judgement of a message's files by name, by content and by what archives hold:
blocked extensions (Gmail's list), double extensions, bidi and invisible characters in
names, content that is not what its name says (magic bytes), macros in OOXML documents,
and the members of zip, tar, gzip, bzip2 and xz archives, read in memory and never
written to disk. 7z and rar cannot be read with the standard library; they are only noted.
The bytes it reads of each member that is not itself an archive (its first 4 KiB; the
EICAR file is at most 128 bytes and starts the file) are also searched for the test files
of :mod:`spoolgate.scan.signatures`, reported as ``test_files`` for the scanner to turn
into virus findings.

Pure function of the parse: no I/O, no configuration read. Time and memory are bounded by
:class:`AttachmentRules` (members, declared and decompressed bytes, nesting) for the whole
message, so a bomb costs what its limits allow and no more. Where a limit stops the reading,
or an archive is encrypted, the result says ``unscannable`` (never clean). Nothing a message
contains makes it raise: a malformed archive is noted and the other files are still judged;
an unexpected error becomes ``unscannable``.
"""

from __future__ import annotations

import bz2
import io
import lzma
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

from spoolgate.mail.verdict import Symbol
from spoolgate.mime.parse import ParsedMessage, Part
from spoolgate.scan.signatures import Hit, signatures_in

# Gmail's "File types blocked in Gmail" (support.google.com/mail/answer/6590, 2024), plus
# double-click launchers from Microsoft Defender's common attachment filter and abuse reports
# (.reg .scf .vhdx, PowerShell modules, ClickOnce, shell links to settings and libraries).
GMAIL_BLOCKED = frozenset("""
    ade adp apk appx appxbundle bat cab chm cmd com cpl diagcab diagcfg diagpkg dll dmg ex
    ex_ exe hta img ins iso isp jar jnlp js jse lib lnk mde mjs msc msi msix msixbundle msp
    mst nsh pif ps1 scr sct shb sys vb vbe vbs vhd vxd wsc wsf wsh xll""".split())
BLOCKED_EXTENSIONS = GMAIL_BLOCKED | frozenset("""
    reg scf vhdx psm1 psd1 ps1xml psc1 application appref-ms settingcontent-ms library-ms
    gadget ws inf hlp""".split())
MACRO_EXTENSIONS = frozenset("docm dotm xlsm xltm xlam pptm potm ppsm ppam sldm".split())

# Extensions a victim trusts, shown before the real one ("invoice.pdf.exe").
_DECOYS = frozenset("""pdf doc docx xls xlsx ppt pptx odt ods rtf txt csv jpg jpeg png gif bmp
    tif tiff mp3 mp4 wav avi mov zip""".split())
_WEB_CONTENT = frozenset({"htm", "html", "shtml", "xhtml", "svg"})  # phishing pages

DECISIVE = 20.0  # above the default reject threshold (15): one such finding rejects alone
RULES: dict[str, tuple[float, str]] = {
    "ATTACH_BLOCKED_EXT": (DECISIVE, "a file type that runs when opened"),
    "ATTACH_DOUBLE_EXT": (5.0, "a trusted extension shown before a dangerous one"),
    "ATTACH_BIDI_NAME": (DECISIVE, "bidi or invisible characters disguise a file name"),
    "ATTACH_TYPE_MISMATCH": (5.0, "content is not what the name or type says"),
    "ATTACH_ARCHIVE_BLOCKED_EXT": (DECISIVE, "an archive holds a file type that runs"),
    "ATTACH_ENCRYPTED_ARCHIVE": (2.0, "an encrypted archive (cannot be inspected)"),
    "ATTACH_UNREADABLE_ARCHIVE": (1.0, "an archive this scanner cannot read (7z, rar, broken)"),
    "ATTACH_MACRO": (4.0, "an Office document with macros"),
    "ATTACH_TOO_MANY_PARTS": (1.0, "more MIME parts than are inspected"),
}

_REORDERING = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # change what is shown
_INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u061c\ufeff"  # zero-width and direction marks
_REMOVE_HIDDEN = {ord(char): None for char in _REORDERING + _INVISIBLE}
_PATH_SEPARATOR = re.compile(r"[\\/]")

_HEAD = 4096  # bytes of a member read to tell its type (a PE header is within the first 1 KB)
_RATIO_FLOOR = 1024 * 1024  # smaller members may compress as well as they like (logs, XML)
_XZ_MEMORY = 64 * 1024 * 1024  # an xz header may ask for a 1.5 GB dictionary
_CENTRAL_HEADER = b"PK\x01\x02"

# (offset, magic, kind): small on purpose; kinds the rules below care about.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "pdf"), (0, b"\x89PNG\r\n\x1a\n", "png"), (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF8", "gif"), (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"\x1f\x8b\x08", "gzip"),
    (0, b"\xfd7zXZ\x00", "xz"), (0, b"7z\xbc\xaf\x27\x1c", "7z"), (0, b"Rar!\x1a\x07", "rar"),
    (257, b"ustar", "tar"), (0, b"\x7fELF", "elf"), (0, b"\xfe\xed\xfa\xce", "mach-o"),
    (0, b"\xfe\xed\xfa\xcf", "mach-o"), (0, b"\xce\xfa\xed\xfe", "mach-o"),
    (0, b"\xcf\xfa\xed\xfe", "mach-o"), (0, b"#!/", "script"), (0, b"#! /", "script"),
)
_EXECUTABLE = frozenset({"pe", "elf", "mach-o"})
_ARCHIVES = frozenset({"zip", "tar", "gzip", "bz2", "xz", "7z", "rar"})
_STREAMS = frozenset({"gzip", "bz2", "xz"})  # one compressed file, perhaps a tar
# What a name or declared type claims, and the content that contradicts each claim.
_CLAIMS = {**dict.fromkeys(("pdf",), "pdf"),
           **dict.fromkeys("doc docx xls xlsx ppt pptx odt ods odp".split(), "office"),
           **dict.fromkeys("jpg jpeg png gif bmp tif tiff webp".split(), "image"),
           **dict.fromkeys("txt csv log rtf".split(), "text")}
_SUSPECT = {"script": frozenset({"pdf", "office", "image"}),
            "ole2": frozenset({"pdf", "image", "text"})}
_SHOWN_NAME_MAX = 80
_HIDDEN_IN_WORD = 1.0  # a zero-width joiner or direction mark inside a name's words


@dataclass(frozen=True, slots=True)
class AttachmentRules:
    """What is blocked (extensions lower case, without the dot) and how far archives are
    read; the limits hold for the whole message, not per attachment."""

    blocked_extensions: frozenset[str] = BLOCKED_EXTENSIONS
    max_parts: int = 500
    max_archive_depth: int = 3  # an archive in an archive in an archive
    max_archive_members: int = 1000  # members listed, over every archive of the message
    max_archive_size: int = 256 * 1024 * 1024  # declared uncompressed bytes, summed
    max_archive_ratio: float = 100.0  # per member of 1 MiB or more
    max_expanded_bytes: int = 64 * 1024 * 1024  # bytes actually decompressed to look inside
    decisive_score: float = DECISIVE  # lower it below 15 to quarantine instead of reject


@dataclass(frozen=True, slots=True)
class AttachmentFindings:
    """The symbols of every rule that matched, why part of the message was not seen, and
    the test files (EICAR) found inside archives, with the member each was in."""

    symbols: tuple[Symbol, ...] = ()
    unscannable: str | None = None
    test_files: tuple[Hit, ...] = ()


@dataclass(slots=True)
class _Inspection:
    """The state of one call: hits so far and what is left of the message's budgets."""

    rules: AttachmentRules
    hits: list[tuple[str, float, str]] = field(default_factory=list)
    test_files: list[Hit] = field(default_factory=list)
    unscannable: str | None = None
    members: int = 0
    declared: int = 0
    expanded: int = 0

    def hit(self, rule: str, detail: str, score: float | None = None) -> None:
        """Record *rule* for *detail*; decisive rules score what the rules say is decisive."""
        if score is None:
            score = RULES[rule][0]
        if score == DECISIVE:
            score = self.rules.decisive_score
        self.hits.append((rule, score, detail))

    def look_inside(self, data: bytes, kind: str | None, where: str) -> None:
        """Note the test files (EICAR) in *data*, the bytes already read of a member of
        *kind*; an archive's own members are looked inside instead."""
        if kind not in _ARCHIVES:
            self.test_files.extend((signature, where) for signature in signatures_in(data))

    def give_up(self, reason: str) -> None:
        self.unscannable = self.unscannable or reason

    def expand(self, size: int) -> bool:
        """Charge *size* decompressed bytes; False (and unscannable) when over the limit."""
        if self.expanded + size > self.rules.max_expanded_bytes:
            self.give_up(f"archive expands beyond the {self.rules.max_expanded_bytes}-byte "
                         "inspection limit")
            return False
        self.expanded += size
        return True


def inspect_attachments(parsed: ParsedMessage, rules: AttachmentRules) -> AttachmentFindings:
    """Every attachment rule that matches *parsed*, and whether something went unseen."""
    state = _Inspection(rules)
    try:
        if parsed.part_count > rules.max_parts:
            state.hit("ATTACH_TOO_MANY_PARTS", f"{parsed.part_count} MIME parts")
            state.give_up(f"more than {rules.max_parts} MIME parts")
        for part in parsed.parts:
            if _is_file(part):
                _inspect_part(part, state)
    except Exception as error:  # a last guard: fail safe, never crash the scanner
        state.give_up(f"attachment inspection failed ({type(error).__name__})")
    return AttachmentFindings(_merged(state.hits), state.unscannable, tuple(state.test_files))


def _is_file(part: Part) -> bool:
    """Everything but an inline text body: clients offer unnamed binary parts as files."""
    return (part.filename is not None or part.disposition == "attachment"
            or not part.content_type.startswith("text/"))


def _inspect_part(part: Part, state: _Inspection) -> None:
    name = part.filename or ""
    label = _shown(name) if name else f"unnamed part ({_shown(part.content_type)})"
    _check_name(name, label, None, state)
    kind = _kind(part.payload)
    _check_content(label, _extension(_real_name(name)), part.content_type, kind, state)
    if kind in _ARCHIVES:
        _inspect_archive(kind, part.payload, name, label, 1, state)


# Names


def _shown(name: str) -> str:
    """*name* fit for a log line: control and format characters escaped, long names cut."""
    if len(name) > _SHOWN_NAME_MAX:
        name = name[:_SHOWN_NAME_MAX] + "..."
    return repr(name)


def _real_name(name: str) -> str:
    """The name Windows saves: last path segment, hidden characters and trailing dots gone."""
    return _windows_base(name.translate(_REMOVE_HIDDEN))


def _displayed_name(name: str) -> str:
    """Roughly how a client shows *name*: text after U+202E (RLO) reversed up to U+202C."""
    head, *runs = name.split("\u202e")
    pieces = [head]
    for run in runs:
        reversed_part, _, rest = run.partition("\u202c")
        pieces.append(reversed_part[::-1] + rest)
    return _windows_base("".join(pieces).translate(_REMOVE_HIDDEN))


def _windows_base(name: str) -> str:
    return _PATH_SEPARATOR.split(name)[-1].rstrip(" .")


def _extension(name: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return extension.strip().lower() if dot else ""


def _decoy(name: str) -> str:
    """The extension before the last one, if it is one people trust ("pdf" in a.pdf.exe)."""
    stem = name.rpartition(".")[0]
    previous = _extension(stem)
    return previous if previous in _DECOYS else ""


def _check_name(name: str, label: str, container: str | None, state: _Inspection) -> None:
    if not name:
        return
    real = _real_name(name)
    where = f"{label} in {container}" if container else label
    extensions = {_extension(real), _extension(_displayed_name(name)),
                  _extension(_windows_base(real.partition("\x00")[0]))}
    blocked = sorted(extensions & state.rules.blocked_extensions)
    if blocked:
        rule = "ATTACH_ARCHIVE_BLOCKED_EXT" if container else "ATTACH_BLOCKED_EXT"
        state.hit(rule, f"{where}: .{blocked[0]}")
    extension = _extension(real)
    decoy = _decoy(real)
    if decoy and (extension in state.rules.blocked_extensions or extension in _WEB_CONTENT):
        state.hit("ATTACH_DOUBLE_EXT", f"{where}: .{decoy}.{extension}")
    if extension in MACRO_EXTENSIONS:
        state.hit("ATTACH_MACRO", f"{where}: .{extension}")
    _check_hidden_characters(name, where, state)


def _check_hidden_characters(name: str, where: str, state: _Inspection) -> None:
    """Reordering controls decide; zero-width characters and direction marks add a little.

    Only the controls (RLO and friends) can make "exe.pdf" show as "fdp.exe". Zero-width
    joiners and direction marks occur inside Persian, Arabic and Hebrew names and cannot
    reorder Latin letters; a dangerous extension they hide is caught on the name without them.
    """
    if not any(char in _REORDERING or char in _INVISIBLE for char in name):
        return
    decisive = any(char in _REORDERING for char in name)
    detail = f"{where} shows as {_shown(_displayed_name(name))}"
    state.hit("ATTACH_BIDI_NAME", detail, None if decisive else _HIDDEN_IN_WORD)


# Content


def _kind(head: bytes) -> str | None:
    """The kind of content by its first bytes, from the small table above."""
    if _is_pe(head):
        return "pe"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    for offset, magic, kind in _MAGIC:
        if head.startswith(magic, offset):
            return kind
    return None


def _is_pe(head: bytes) -> bool:
    """MZ with a PE signature where the DOS header points (text may start with "MZ")."""
    if not head.startswith(b"MZ") or len(head) < 64:
        return False
    offset = int.from_bytes(head[60:64], "little")
    return head[offset:offset + 4] == b"PE\x00\x00"


def _check_content(label: str, extension: str, content_type: str | None, kind: str | None,
                   state: _Inspection) -> None:
    if kind in _EXECUTABLE and extension not in state.rules.blocked_extensions:
        state.hit("ATTACH_TYPE_MISMATCH", f"{label} is a {kind} executable", DECISIVE)
        return
    claim = _CLAIMS.get(extension) or _claim_of_type(content_type)
    if kind in _SUSPECT and claim in _SUSPECT[kind]:
        state.hit("ATTACH_TYPE_MISMATCH", f"{label} claims {claim} but holds {kind}")


def _claim_of_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    if content_type == "application/pdf":
        return "pdf"
    if content_type.startswith("image/"):
        return "image"
    return "text" if content_type in ("text/plain", "text/csv") else None


# Archives


def _inspect_archive(kind: str, data: bytes, name: str, label: str, depth: int,
                     state: _Inspection) -> None:
    """List what *data* holds and judge each member like an attachment."""
    if depth > state.rules.max_archive_depth:
        state.give_up(f"archive nesting deeper than {state.rules.max_archive_depth} ({label})")
        return
    inspect = {"zip": _inspect_zip, "tar": _inspect_tar}.get(kind)
    try:
        if inspect is not None:
            inspect(data, label, depth, state)
        elif kind in _STREAMS:
            _inspect_stream(kind, data, name, label, depth, state)
        else:
            state.hit("ATTACH_UNREADABLE_ARCHIVE", f"{label}: {kind} archive not inspected")
    except Exception as error:  # malformed archives raise almost anything; judge the rest
        state.hit("ATTACH_UNREADABLE_ARCHIVE",
                  f"{label}: malformed {kind} ({type(error).__name__})")


def _count_members(count: int, label: str, state: _Inspection) -> bool:
    """Charge *count* members; False (and unscannable) when the message has too many."""
    state.members += count
    if state.members > state.rules.max_archive_members:
        state.give_up(f"archive bomb: more than {state.rules.max_archive_members} "
                      f"archive members ({label})")
        return False
    return True


def _inspect_zip(data: bytes, label: str, depth: int, state: _Inspection) -> None:
    # Each central directory entry starts with this signature, so its count bounds the
    # entries zipfile would build objects for: checked before it builds any.
    if not _count_members(data.count(_CENTRAL_HEADER), label, state):
        return
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if not info.is_dir():
                _inspect_zip_member(archive, info, label, depth, state)


def _inspect_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, container: str,
                        depth: int, state: _Inspection) -> None:
    label = _shown(info.filename)
    _check_name(info.filename, label, container, state)
    if _windows_base(info.filename).lower() == "vbaproject.bin":
        state.hit("ATTACH_MACRO", f"{container} holds {label}")
    if info.flag_bits & 0x1:
        state.hit("ATTACH_ENCRYPTED_ARCHIVE", f"{label} in {container}")
        state.give_up(f"encrypted archive ({container})")
        return
    if _declares_bomb(info, f"{label} in {container}", state):
        return
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return  # bzip2 and lzma members are not decompressed in bounded steps: names only
    with archive.open(info) as member:
        head = member.read(_HEAD)
        kind = _kind(head)
        where = f"{label} in {container}"
        state.look_inside(head, kind, where)
        _check_content(where, _extension(_real_name(info.filename)), None, kind, state)
        if kind in _ARCHIVES and _may_descend(where, depth, info.file_size, state):
            rest = member.read(info.file_size - len(head))
            _inspect_archive(kind, head + rest, info.filename, where, depth + 1, state)


def _declares_bomb(info: zipfile.ZipInfo, where: str, state: _Inspection) -> bool:
    """The central directory's sizes over the limits: unscannable, without decompressing."""
    rules = state.rules
    state.declared += info.file_size
    if state.declared > rules.max_archive_size:
        state.give_up(f"archive bomb: expands to more than {rules.max_archive_size} bytes "
                      f"({where})")
        return True
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= _RATIO_FLOOR and ratio > rules.max_archive_ratio:
        state.give_up(f"archive bomb: compression ratio {ratio:.0f}:1 over "
                      f"{rules.max_archive_ratio:g}:1 ({where})")
        return True
    return False


def _may_descend(label: str, depth: int, size: int, state: _Inspection) -> bool:
    """Whether a nested archive of *size* bytes may be read: depth, then bytes."""
    if depth + 1 > state.rules.max_archive_depth:
        state.give_up(f"archive nesting deeper than {state.rules.max_archive_depth} ({label})")
        return False
    return state.expand(size)


def _inspect_tar(data: bytes, label: str, depth: int, state: _Inspection) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        while (member := archive.next()) is not None:
            if not _count_members(1, label, state):
                return
            _inspect_tar_member(archive, member, label, depth, state)


def _inspect_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo, container: str,
                        depth: int, state: _Inspection) -> None:
    label = _shown(member.name)
    _check_name(member.name, label, container, state)
    reader = archive.extractfile(member) if member.isfile() else None
    if reader is None:
        return
    head = reader.read(_HEAD)  # member.size may be a sparse file's huge size: never read all
    kind = _kind(head)
    where = f"{label} in {container}"
    state.look_inside(head, kind, where)
    _check_content(where, _extension(_real_name(member.name)), None, kind, state)
    if kind in _ARCHIVES and _may_descend(where, depth, member.size, state):
        rest = reader.read(member.size - len(head))
        _inspect_archive(kind, head + rest, member.name, where, depth + 1, state)


def _inspect_stream(kind: str, data: bytes, name: str, label: str, depth: int,
                    state: _Inspection) -> None:
    """One compressed file: its inner name and head are judged; a tar in it is listed."""
    inner_name = _inner_name(name)
    where = f"{_shown(inner_name)} in {label}"
    _check_name(inner_name, _shown(inner_name), label, state)
    head = _decompress(kind, data, _HEAD)
    inner = _kind(head)
    state.look_inside(head, inner, where)
    _check_content(where, _extension(_real_name(inner_name)), None, inner, state)
    if inner not in _ARCHIVES:
        return
    next_depth = depth if inner == "tar" else depth + 1  # a .tar.gz is one archive
    if next_depth > state.rules.max_archive_depth:
        state.give_up(f"archive nesting deeper than {state.rules.max_archive_depth} ({where})")
        return
    remaining = state.rules.max_expanded_bytes - state.expanded
    content = _decompress(kind, data, remaining + 1)
    if state.expand(len(content)):
        _inspect_archive(inner, content, inner_name, where, next_depth, state)


def _inner_name(name: str) -> str:
    """"a.tar.gz" -> "a.tar", "a.tgz" -> "a.tar", "a.exe.bz2" -> "a.exe"."""
    base = _real_name(name)
    stem, dot, extension = base.rpartition(".")
    if not dot:
        return base
    return f"{stem}.tar" if extension.lower() in ("tgz", "tbz", "tbz2", "txz") else stem


def _decompress(kind: str, data: bytes, limit: int) -> bytes:
    """At most *limit* bytes of a gzip, bzip2 or xz stream (its first member)."""
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data, limit)
    if kind == "bz2":
        return bz2.BZ2Decompressor().decompress(data, max_length=limit)
    xz = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMORY)
    return xz.decompress(data, max_length=limit)


# Results


def _merged(hits: list[tuple[str, float, str]]) -> tuple[Symbol, ...]:
    """One symbol per rule: its highest score and the first few files it matched."""
    scores: dict[str, float] = {}
    details: dict[str, list[str]] = {}
    for rule, score, detail in hits:
        scores[rule] = max(score, scores.get(rule, score))
        if detail not in details.setdefault(rule, []):
            details[rule].append(detail)
    return tuple(Symbol(rule, scores[rule], _joined(details[rule])) for rule in scores)


def _joined(details: list[str]) -> str:
    more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
    return "; ".join(details[:3]) + more
