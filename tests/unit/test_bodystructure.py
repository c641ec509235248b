"""tests/bodystructure.py: IMAP BODYSTRUCTURE responses read into leaf parts."""

from __future__ import annotations

import pytest

from tests.bodystructure import Leaf, bodystructures, join_response, leaves, read_items

# What Dovecot 2.3 answered for a multipart/mixed with an encapsulated message and a zip.
RESPONSE = [
    (b'1 (UID 7 BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1 '
     b'NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 120 (NIL "in" NIL NIL NIL '
     b'NIL NIL NIL NIL NIL) ("text" "html" NIL NIL NIL "7bit" 3 1 NIL NIL NIL NIL) 6 NIL '
     b'NIL NIL NIL)("application" "zip" ("name" "a.zip") NIL NIL "base64" 8 NIL '
     b'("attachment" ("filename*" {27}', b"utf-8''r%C3%A9sum%C3%A9.zip"),
    b')) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL))',
]


def test_a_response_with_a_literal_is_read_into_its_leaves() -> None:
    (structure,) = bodystructures(join_response(RESPONSE)).values()
    assert leaves(structure) == [
        Leaf("text/plain", None, None, 1),
        Leaf("text/html", None, None, 2),
        Leaf("application/zip", "résumé.zip", "attachment", 1)]


def test_scalars_lists_and_nil() -> None:
    assert read_items(b'(a "b \\" c" NIL {3}\r\nxyz ())') == [[b"a", b'b " c', None, b"xyz", []]]


@pytest.mark.parametrize("text", [b"(a", b"a)", b'("x', b"{9}\r\nab"])
def test_malformed_responses_raise_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        read_items(text)
