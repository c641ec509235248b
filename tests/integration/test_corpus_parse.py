"""Every file of the shared corpus goes through parse_message: no exception, bounded time.

Files are read as they are (mbox "From " lines, TNEF blobs, DKIM keys and address lists
included): the parser must survive any bytes, not only well-formed messages.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spoolgate.mime.parse import Limits, ParsedMessage, parse_message
from tests.conftest import CORPUS

PER_MESSAGE_SECONDS = 5.0  # generous: the bound is about pathological cases, on a shared box


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(path for path in CORPUS.rglob("*") if path.is_file())


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"mail corpus not found at {CORPUS} "
                                                "(set SPOOLGATE_CORPUS)")
def test_every_corpus_file_parses_in_bounded_time(capsys: pytest.CaptureFixture[str]):
    files = corpus_files()
    assert files, f"no files under {CORPUS}"
    limits = Limits()
    timings: list[tuple[float, Path]] = []
    truncated = 0
    for path in files:
        start = time.monotonic()
        parsed = parse_message(path.read_bytes(), limits)
        elapsed = time.monotonic() - start
        timings.append((elapsed, path))
        assert isinstance(parsed, ParsedMessage)
        assert not any(d.startswith("parser-error") for d in parsed.defects), path
        assert parsed.part_count <= limits.max_parts and parsed.max_depth <= limits.max_depth
        truncated += parsed.truncated
    timings.sort(reverse=True)
    with capsys.disabled():
        print(f"\n{len(files)} corpus files, {truncated} truncated, "
              f"{sum(t for t, _ in timings):.1f} s total; slowest:")
        for elapsed, path in timings[:5]:
            print(f"  {elapsed:.3f} s  {path.relative_to(CORPUS)}")
    slow = [(round(t, 2), str(p)) for t, p in timings if t > PER_MESSAGE_SECONDS]
    assert not slow, slow
