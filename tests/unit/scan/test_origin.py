"""The client that handed a message to the receiving site, read from its Received fields.

Addresses here are public ones (the rules pass over private and documentation ranges);
they are strings in headers, never contacted."""

from __future__ import annotations

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.scan.origin import MAX_FIELDS, RULES, EntryHop, entry_hop, origin_symbols

SITE_HOPS = (  # the receiving site's own hops, newest first: never the entry point
    "from mail3.site.test (localhost [127.0.0.1]) by mail3.site.test (Postfix) with ESMTP id 1",
    "from spamgw.site.test (spamgw.site.test [192.168.18.120]) by mail3.site.test with ESMTP",
)


def headers(*received: str) -> tuple[tuple[str, str], ...]:
    raw = "".join(f"Received: {line}\r\n" for line in received)
    return parse_message(f"{raw}From: a@remote.test\r\nSubject: s\r\n\r\nbody\r\n".encode()).headers


def names(*received: str) -> set[str]:
    return {s.name for s in origin_symbols(headers(*received))}


@pytest.mark.parametrize(("field", "hop"), [
    ("from qkc (ppp-124-120-143-91.revip2.asianet.co.th [124.120.143.91]) by mx.site.test",
     EntryHop("124.120.143.91", "ppp-124-120-143-91.revip2.asianet.co.th", "qkc")),
    ("from mail.sender.test (unknown [81.2.69.7]) by mx.site.test (Postfix)",
     EntryHop("81.2.69.7", "", "mail.sender.test")),
    ("from out.sender.test ([81.2.69.8] helo=out.sender.test) by mx.site.test with esmtp (Exim)",
     EntryHop("81.2.69.8", "out.sender.test", "out.sender.test")),
    ("from [81.2.69.9] (helo=bot) by mx.site.test with smtp (Exim 4.62)",
     EntryHop("81.2.69.9", "", "bot")),
    ("from unknown (HELO box) (81.2.69.10) by mx.site.test with SMTP",
     EntryHop("81.2.69.10", "", "box")),
])
def test_the_entry_hop_as_postfix_exim_and_qmail_write_it(field: str, hop: EntryHop) -> None:
    assert entry_hop(headers(*SITE_HOPS, field)) == hop


def test_the_sites_own_hops_and_private_clients_are_passed_over() -> None:
    assert entry_hop(headers(*SITE_HOPS)) is None
    outside = "from relay.sender.test (relay.sender.test [62.40.96.20]) by gw.site.test"
    older = "from [10.0.0.5] (dsl-1-2-3-4.home.test [1.2.3.4]) by relay.sender.test"
    # The newest public client is the entry point; the sender's own submission hop
    # (a home address, legitimately) further down is not judged.
    assert entry_hop(headers(*SITE_HOPS, outside, older)).address == "62.40.96.20"
    assert names(*SITE_HOPS, outside, older) == set()


def test_a_home_or_dial_up_address_is_client_dynamic() -> None:
    assert names("from x.test (triband-mum-120.60.8.28.mtnl.net.in [120.60.8.28]) by mx.test") \
        == {"CLIENT_DYNAMIC"}
    assert names("from x.test (host.pool.isp.test [62.40.96.3]) by mx.test") == {"CLIENT_DYNAMIC"}
    assert names("from x.test (3e286014.cust.isp.test [62.40.96.20]) by mx.test") == \
        {"CLIENT_DYNAMIC"}  # the address in hex: 62.40.96.20 = 3e.28.60.14


@pytest.mark.parametrize("rdns", [
    "mail-yx0-f175.google.test",  # one number of the address is a coincidence
    "smtp4.provider.test", "lists.debian.test", "mx-out-62-40.provider.test",
])
def test_servers_with_numbers_in_their_names_are_not_dynamic(rdns: str) -> None:
    assert names(f"from {rdns} ({rdns} [62.40.96.175]) by mx.test") == set()


def test_no_reverse_dns_and_a_bare_helo() -> None:
    assert names("from bot (unknown [81.2.69.7]) by mx.test") == {"CLIENT_NO_RDNS",
                                                                     "CLIENT_HELO_BARE"}
    assert names("from localhost (mail.sender.test [81.2.69.7]) by mx.test") == set()
    assert names("from [81.2.69.7] (mail.sender.test [81.2.69.7]) by mx.test") == set()
    # Sendmail's "from HELO ([IP])" means different things in different versions: no rule.
    assert names("from sender.test ([81.2.69.7]) by mx.test (8.11.6/8.11.6)") == set()


def test_symbols_carry_the_rule_scores_and_say_which_host() -> None:
    (symbol,) = origin_symbols(headers("from a.test (unknown [81.2.69.7]) by mx.test"))

    assert symbol.score == RULES["CLIENT_NO_RDNS"][0] and "81.2.69.7" in symbol.detail


@pytest.mark.parametrize("field", [
    "", "from", "by mx.test", "from (((((( [[[[ ]]]] by", "from x ([999.1.1.1]) by mx",
    "from x (y [2001:db8::1]) by mx", "from " + "a" * 100_000 + " by mx",
    "from x (y [81.2.69.7]" + ")" * 10_000,
])
def test_malformed_fields_give_no_rule_and_never_raise(field: str) -> None:
    origin_symbols(headers(field))


def test_only_the_newest_fields_are_read() -> None:
    private = "from a (b [10.0.0.1]) by c"
    bot = "from bot (unknown [81.2.69.7]) by mx.test"

    assert names(*[private] * (MAX_FIELDS - 1), bot) == {"CLIENT_NO_RDNS", "CLIENT_HELO_BARE"}
    assert names(*[private] * MAX_FIELDS, bot) == set()
