"""The search box's query language (spoolgate/webmail/search.py) and its FTS5 quoting
(spoolgate/store/search.py): operators, quotes and hostile input."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from spoolgate.store.search import Field, SearchQuery, SearchTerm, fts5_match
from spoolgate.webmail.search import MAX_TERMS, parse_query

UTC = ZoneInfo("UTC")


def _terms(text: str) -> list[tuple[Field, str]]:
    return [(t.field, t.text) for t in parse_query(text, UTC).terms]


def test_plain_words_are_separate_terms() -> None:
    assert _terms("quarterly  numbers") == [(Field.ANY, "quarterly"), (Field.ANY, "numbers")]


def test_quoted_phrases_stay_together() -> None:
    assert _terms('"see you soon" friday') == [(Field.ANY, "see you soon"), (Field.ANY, "friday")]


def test_field_operators_take_a_word_or_a_phrase() -> None:
    assert _terms('from:bob subject:"lunch plans" TO:carol filename:report') == [
        (Field.FROM, "bob"), (Field.SUBJECT, "lunch plans"), (Field.TO, "carol"),
        (Field.FILENAME, "report")]


def test_has_attachment_is_a_flag_not_a_word() -> None:
    query = parse_query("has:attachment invoice", UTC)
    assert query.has_attachment and query.terms == (SearchTerm(Field.ANY, "invoice"),)


def test_dates_in_the_sites_zone() -> None:
    zone = ZoneInfo("Europe/Berlin")
    query = parse_query("after:2026-03-01 before:2026-03-02", zone)
    assert query.after == datetime(2026, 3, 1, tzinfo=zone).timestamp()
    assert query.before == datetime(2026, 3, 2, tzinfo=zone).timestamp()


def test_unknown_operators_and_bad_dates_are_text() -> None:
    assert _terms("cc:dave before:yesterday has:wings") == [
        (Field.ANY, "cc:dave"), (Field.ANY, "before:yesterday"), (Field.ANY, "has:wings")]


@pytest.mark.parametrize("text", ['"', '""', '"*"', "*", "-", "^", "()", ":", "   ", ""])
def test_input_without_words_searches_nothing(text: str) -> None:
    query = parse_query(text, UTC)
    assert query.terms == () and query.empty


def test_unicode_words_are_kept() -> None:
    assert _terms("Grüße from:José 東京") == [(Field.ANY, "Grüße"), (Field.FROM, "José"),
                                             (Field.ANY, "東京")]


def test_terms_are_bounded() -> None:
    assert len(parse_query("word " * 100, UTC).terms) == MAX_TERMS


def test_every_term_is_one_quoted_fts5_string() -> None:
    terms = parse_query('bob OR NEAR(a b) x* -y ^z "say ""hi""" subject:a"b '
                        'message_search:x body_text:y', UTC).terms
    match = fts5_match(terms)
    assert match == ('"bob" AND "OR" AND "NEAR(a" AND "b)" AND "x*" AND "-y" AND "^z" AND '
                     '"say " AND "hi" AND subject : "a""b" AND "message_search:x" AND '
                     '"body_text:y"')


def test_an_empty_query_is_empty() -> None:
    assert SearchQuery().empty and not parse_query("has:attachment", UTC).empty
