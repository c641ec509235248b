"""Configuration: every mistake is named by file and key, and a good file loads as written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from spoolgate.cli import main
from spoolgate.config import (
    ConfigError,
    DomainSettings,
    Endpoint,
    LogSettings,
    Route,
    SmtpSettings,
    WebSettings,
    load_settings,
)

DOMAIN = '[[domains]]\nname = "example.test"\nroute = "smtp://127.0.0.1:2526"\n'


def write(folder: Path, text: str, name: str = "spoolgate.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(folder: Path, text: str) -> tuple[ConfigError, Path]:
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value, path.resolve()


def assert_located(error: ConfigError, path: Path, key: str, problem: str) -> None:
    """The message names the file, then the key, then what is wrong."""
    assert error.file == str(path)
    assert error.key == key
    assert problem in error.problem
    assert str(error) == f"{path}: {key}: {error.problem}"


# -- the file itself ------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.file == str(path)
    assert caught.value.key == ""
    assert str(caught.value) == f"{path}: no such file"


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    error, path = config_error(tmp_path, '[smtp]\nmax_recipients = = 5\n' + DOMAIN)
    assert error.file == str(path)
    assert error.problem.startswith("not valid TOML: ")
    assert "line 2" in error.problem
    assert str(error).startswith(f"{path}: not valid TOML: ")


# -- one test per class of mistake ----------------------------------------------------------------

MISTAKES = {
    # unknown keys, at every level
    "unknown top-level key": ('colour = "blue"\n' + DOMAIN, "colour", "unknown key"),
    "unknown top-level table": ("[smpt]\nhostname = \"mx.example.test\"\n" + DOMAIN,
                                "smpt", "unknown key"),
    "unknown key in [smtp]": ("[smtp]\nmax_recipient = 5\n" + DOMAIN,
                              "[smtp].max_recipient", "unknown key"),
    "unknown key in [store]": ("[store]\nurl = \"sqlite:///sg.db\"\nsync = true\n" + DOMAIN,
                               "[store].sync", "unknown key"),
    "unknown key in a domain": (DOMAIN + 'relay = "smtp://x"\n', "[[domains]][1].relay",
                                "unknown key"),
    # wrong types
    "string for an integer": ('[smtp]\nmax_recipients = "100"\n' + DOMAIN,
                              "[smtp].max_recipients", "expected an integer, got a string"),
    "boolean for an integer": ("[smtp]\nmax_sessions = true\n" + DOMAIN,
                               "[smtp].max_sessions", "expected an integer, got a boolean"),
    "float for an integer": ("[smtp]\nmax_recipients = 1.5\n" + DOMAIN,
                             "[smtp].max_recipients", "expected an integer, got a number"),
    "array for a string": ('[smtp]\nhostname = ["mx.example.test"]\n' + DOMAIN,
                           "[smtp].hostname", "expected a string, got an array"),
    "string for a boolean": ('[store]\nauto_migrate = "yes"\n' + DOMAIN,
                             "[store].auto_migrate", "expected a boolean, got a string"),
    "string for a number": ('[smtp]\nidle_timeout = "300"\n' + DOMAIN,
                            "[smtp].idle_timeout", "expected an integer or a number, got a string"),
    "value for a section": ("smtp = 5\n" + DOMAIN, "smtp", "expected a table, got an integer"),
    # values out of range
    "zero recipients": ("[smtp]\nmax_recipients = 0\n" + DOMAIN,
                        "[smtp].max_recipients", "must be at least 1, got 0"),
    "negative size": ("[smtp]\nmax_message_size = -1\n" + DOMAIN,
                      "[smtp].max_message_size", "must be at least 1024, got -1"),
    "command line below RFC 5321": ("[smtp]\nmax_command_line = 100\n" + DOMAIN,
                                    "[smtp].max_command_line", "must be at least 512"),
    "text line below RFC 5321": ("[smtp]\nmax_line_length = 998\n" + DOMAIN,
                                 "[smtp].max_line_length", "must be at least 1000"),
    "timeout below a second": ("[smtp]\nidle_timeout = 0.5\n" + DOMAIN,
                               "[smtp].idle_timeout", "must be at least 1, got 0.5"),
    "timeout not a number": ("[smtp]\nidle_timeout = nan\n" + DOMAIN,
                             "[smtp].idle_timeout", "must be a finite number"),
    "endless commit wait": ("[store]\ngroup_commit_wait_ms = inf\n" + DOMAIN,
                            "[store].group_commit_wait_ms", "must be a finite number"),
    "negative commit wait": ("[store]\ngroup_commit_wait_ms = -1\n" + DOMAIN,
                             "[store].group_commit_wait_ms", "must be at least 0"),
    "blank hostname": ('[smtp]\nhostname = "mx example"\n' + DOMAIN,
                       "[smtp].hostname", "not a host name"),
    # listen addresses
    "listen without a port": ('[smtp]\nlisten = "127.0.0.1"\n' + DOMAIN,
                              "[smtp].listen", "no port in '127.0.0.1'"),
    "listen with a bad port": ('[smtp]\nlisten = "127.0.0.1:65536"\n' + DOMAIN,
                               "[smtp].listen", "bad port '65536'"),
    "listen with port zero": ('[smtp]\nlisten = "127.0.0.1:0"\n' + DOMAIN,
                              "[smtp].listen", "bad port '0'"),
    "listen with a named port": ('[smtp]\nlisten = "0.0.0.0:smtp"\n' + DOMAIN,
                                 "[smtp].listen", "bad port 'smtp'"),
    "unbracketed IPv6": ('[smtp]\nlisten = "::1:25"\n' + DOMAIN,
                         "[smtp].listen", "write an IPv6 address in brackets: [::1]:25"),
    "unclosed bracket": ('[smtp]\nlisten = "[::1:25"\n' + DOMAIN, "[smtp].listen", "missing ']'"),
    "junk after bracket": ('[smtp]\nlisten = "[::1]25"\n' + DOMAIN,
                           "[smtp].listen", "unexpected '25' after ']'"),
    "no host": ('[smtp]\nlisten = ":25"\n' + DOMAIN, "[smtp].listen", "no host"),
    "second of two listen addresses": ('[smtp]\nlisten = ["127.0.0.1:25", "[::1]"]\n' + DOMAIN,
                                       "[smtp].listen[2]", "no port in '[::1]'"),
    "listen address not a string": ("[smtp]\nlisten = [25]\n" + DOMAIN,
                                    "[smtp].listen[1]", "expected a string host:port, got an integer"),
    "no listen address": ("[smtp]\nlisten = []\n" + DOMAIN,
                          "[smtp].listen", "needs at least one host:port"),
    "web listen": ('[web]\nlisten = "localhost"\n' + DOMAIN, "[web].listen", "no port"),
    # routes
    "route missing": ('[[domains]]\nname = "example.test"\n',
                      "[[domains]][1].route", "missing"),
    "route without a scheme": ('[[domains]]\nname = "example.test"\nroute = "mail.example.test:25"\n',
                               "[[domains]][1].route", "expected smtp://host:port or lmtp://host:port"),
    "route with a path": ('[[domains]]\nname = "example.test"\n'
                          'route = "smtp://mail.example.test:25/inbox"\n',
                          "[[domains]][1].route", "a route is scheme://host:port, nothing more"),
    "route with a user": ('[[domains]]\nname = "example.test"\n'
                          'route = "smtp://user@mail.example.test"\n',
                          "[[domains]][1].route", "a route is scheme://host:port, nothing more"),
    "route with a bad port": ('[[domains]]\nname = "example.test"\nroute = "lmtp://h:99999"\n',
                              "[[domains]][1].route", "bad port '99999'"),
    "route not a string": ('[[domains]]\nname = "example.test"\nroute = 25\n',
                           "[[domains]][1].route", "expected a string, got an integer"),
    "route of the second domain": (DOMAIN + '[[domains]]\nname = "other.test"\n'
                                   'route = "http://other.test"\n',
                                   "[[domains]][2].route", "unknown scheme 'http'"),
    # domain names
    "domain name missing": ('[[domains]]\nroute = "smtp://127.0.0.1:2526"\n',
                            "[[domains]][1].name", "missing"),
    "single-label domain": ('[[domains]]\nname = "localhost"\nroute = "smtp://h"\n',
                            "[[domains]][1].name", "not a domain name: 'localhost'"),
    "domain with a space": ('[[domains]]\nname = "exa mple.test"\nroute = "smtp://h"\n',
                            "[[domains]][1].name", "not a domain name"),
    "domain with an empty label": ('[[domains]]\nname = "example..test"\nroute = "smtp://h"\n',
                                   "[[domains]][1].name", "not a domain name"),
    "domain with a leading hyphen": ('[[domains]]\nname = "-example.test"\nroute = "smtp://h"\n',
                                     "[[domains]][1].name", "not a domain name"),
    "domain with an underscore": ('[[domains]]\nname = "ex_ample.test"\nroute = "smtp://h"\n',
                                  "[[domains]][1].name", "not a domain name"),
    "address as a domain": ('[[domains]]\nname = "user@example.test"\nroute = "smtp://h"\n',
                            "[[domains]][1].name", "not a domain name"),
    "domain configured twice": (DOMAIN + '[[domains]]\nname = "Example.TEST."\n'
                                'route = "smtp://127.0.0.1:2527"\n',
                                "[[domains]][2].name", "domain 'example.test' is configured twice"),
    # recipient lists
    "recipient with '@'": (DOMAIN + 'recipients = ["alice", "bob@example.test"]\n',
                           "[[domains]][1].recipients[2]",
                           "expected a local part without '@', got 'bob@example.test'"),
    "recipient not a string": (DOMAIN + "recipients = [1]\n",
                               "[[domains]][1].recipients[1]",
                               "expected a local part without '@', got 1"),
    "empty recipient": (DOMAIN + 'recipients = [""]\n', "[[domains]][1].recipients[1]",
                        "expected a local part without '@', got ''"),
    "recipients not a list": (DOMAIN + 'recipients = "alice"\n', "[[domains]][1].recipients",
                              "expected an array, got a string"),
    # no domains
    "no domains at all": ("[smtp]\nmax_recipients = 10\n", "domains", "no [[domains]] configured"),
    "empty domains": ("domains = []\n", "domains", "no [[domains]] configured"),
    "domains not tables": ('domains = ["example.test"]\n', "[[domains]][1]",
                           "expected a table, got a string"),
    "domains a string": ('domains = "example.test"\n', "domains", "expected an array, got a string"),
    # store
    "unsupported store": ('[store]\nurl = "mysql://user@db/spoolgate"\n' + DOMAIN,
                          "[store].url", "unsupported store 'mysql' (expected sqlite:///PATH"),
    "sqlite with two slashes": ('[store]\nurl = "sqlite://spoolgate.db"\n' + DOMAIN,
                                "[store].url", "unsupported store 'sqlite'"),
    # log
    "bad log level": ('[log]\nlevel = "verbose"\n' + DOMAIN, "[log].level",
                      "unknown value 'verbose' (expected debug or info or warning or error)"),
    "upper-case log level": ('[log]\nlevel = "INFO"\n' + DOMAIN, "[log].level",
                             "unknown value 'INFO'"),
    "bad log format": ('[log]\nformat = "xml"\n' + DOMAIN, "[log].format",
                       "unknown value 'xml' (expected text or json)"),
    "log level not a string": ("[log]\nlevel = 10\n" + DOMAIN, "[log].level",
                               "expected a string, got an integer"),
    # delivery, outbound, dns
    "backoff upside down": ("[delivery]\nmin_backoff = 600\nmax_backoff = 60\n" + DOMAIN,
                            "[delivery].max_backoff", "must be at least min_backoff (600)"),
    "negative lifetime": ("[delivery]\nlifetime = -1\n" + DOMAIN, "[delivery].lifetime",
                          "must be at least 0"),
    "ramp above the limit": ("[delivery]\nroute_concurrency = 4\ninitial_concurrency = 5\n"
                             + DOMAIN, "[delivery].initial_concurrency",
                             "must not exceed route_concurrency (4)"),
    "unknown delivery key": ("[delivery]\nretries = 3\n" + DOMAIN, "[delivery].retries",
                             "unknown key"),
    "domain tls mode": (DOMAIN + 'tls = "sometimes"\n', "[[domains]][1].tls",
                        "unknown value 'sometimes' (expected none or opportunistic or required)"),
    "domain retry override": (DOMAIN + "min_backoff = 0\n", "[[domains]][1].min_backoff",
                              "must be at least 0.01"),
    "missing tls_ca": (DOMAIN + 'tls_ca = "nowhere.pem"\n', "[[domains]][1].tls_ca",
                       "no such file"),
    "lmtp outbound": ('[outbound]\nroute = "lmtp://relay.test"\n' + DOMAIN,
                      "[outbound].route", "must be smtp://"),
    "password alone": ('[outbound]\nroute = "smtp://relay.test:587"\npassword = "x"\n' + DOMAIN,
                       "[outbound].username", "go together"),
    "auth without smarthost": ('[outbound]\nusername = "u"\npassword = "p"\n' + DOMAIN,
                               "[outbound].username", "needs a smarthost"),
    "unknown scanner": ('[scan]\nscanners = ["builtin", "clamd"]\n' + DOMAIN,
                        "[scan].scanners[2]",
                        "unknown scanner 'clamd' (expected builtin or clamav or rspamd or "
                        "spamassassin)"),
    "rspamd url": ('[scan]\nrspamd = "127.0.0.1:11333"\n' + DOMAIN, "[scan].rspamd",
                   "expected http://HOST:PORT"),
    "spamd address": ('[scan]\nspamassassin = "localhost:783"\n' + DOMAIN,
                      "[scan].spamassassin", "expected tcp:HOST:PORT or unix:PATH"),
    "authentication flag": ('[scan]\nauthentication = "yes"\n' + DOMAIN,
                            "[scan].authentication", "expected a boolean, got a string"),
    "blocked extension": ('[scan]\nblocked_extensions = ["exe", "a/b"]\n' + DOMAIN,
                          "[scan].blocked_extensions[2]", "expected a file extension"),
    "allow list entry": (DOMAIN + 'allow_senders = ["partner.test", "not an address"]\n',
                         "[[domains]][1].allow_senders[2]",
                         "expected user@example.org or example.org"),
    "block list entry": (DOMAIN + 'block_senders = ["@spam.test"]\n',
                         "[[domains]][1].block_senders[1]",
                         "expected user@example.org or example.org"),
    "web time zone": ('[web]\ntimezone = "Mars/Olympus"\n' + DOMAIN, "[web].timezone",
                      "unknown time zone 'Mars/Olympus'"),
    "web sessions": ('[web]\nsession_idle = 3600\nsession_max = 600\n' + DOMAIN,
                     "[web].session_max", "must be at least session_idle (3600)"),
    "subject prefix": (DOMAIN + 'spam_subject_prefix = "[SPÄM]"\n',
                       "[[domains]][1].spam_subject_prefix", "must be printable ASCII"),
    "clamav without a port": ('[scan]\nclamav = "tcp:127.0.0.1"\n' + DOMAIN, "[scan].clamav",
                              "no port"),
    "clamav address scheme": ('[scan]\nclamav = "127.0.0.1:3310"\n' + DOMAIN, "[scan].clamav",
                              "expected tcp:HOST:PORT or unix:PATH"),
    "thresholds upside down": (DOMAIN + "spam_tag = 8.0\nspam_quarantine = 6.0\n",
                               "[[domains]][1].spam_quarantine", "thresholds must rise"),
    "virus action": (DOMAIN + 'virus = "tag"\n', "[[domains]][1].virus",
                     "unknown value 'tag' (expected reject or quarantine)"),
    "negative rescan hold": ('[scan]\nrescan_hold_minutes = -1\n' + DOMAIN,
                             "[scan].rescan_hold_minutes", "at least 0"),
    "bad nameserver": ('[dns]\nnameservers = ["127.0.0.1:99999"]\n' + DOMAIN,
                       "[dns].nameservers[1]", "bad port"),
}


@pytest.mark.parametrize(("text", "key", "problem"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_is_named_by_file_and_key(tmp_path: Path, text: str, key: str,
                                          problem: str) -> None:
    error, path = config_error(tmp_path, text)
    assert_located(error, path, key, problem)


def test_scan_engines_lists_and_prefix_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, (
        '[scan]\nscanners = ["builtin", "rspamd", "spamassassin"]\n'
        'rspamd = "http://[::1]:11333/"\nspamassassin = "unix:/run/spamd.sock"\n'
        'authentication = false\nbayes = false\nblocked_extensions = [".EXE", "scr"]\n'
        'max_archive_depth = 5\nrescan_on_error = ["rspamd"]\nrescan_hold_minutes = 0\n'
        'rescan_interval = 5\n' + DOMAIN
        + 'allow_senders = ["Partner.test", "boss@remote.test"]\n'
          'block_senders = ["spam.test"]\nspam_subject_prefix = " [SPAM] "\n')))
    scan = settings.scan
    assert scan.scanners == ("builtin", "rspamd", "spamassassin")
    assert (scan.rspamd, scan.spamassassin) == ("http://[::1]:11333", "unix:/run/spamd.sock")
    assert (scan.authentication, scan.bayes, scan.max_archive_depth) == (False, False, 5)
    assert scan.blocked_extensions == (".exe", ".scr")
    assert (scan.rescan_on_error, scan.rescan_hold_minutes, scan.rescan_interval) \
        == (("rspamd",), 0.0, 5.0)
    spam = settings.domains[0].spam
    assert spam.allow_senders == {"partner.test", "boss@remote.test"}
    assert spam.block_senders == {"spam.test"} and spam.subject_prefix == "[SPAM]"


def test_delivery_defaults_and_per_domain_overrides(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, (
        '[delivery]\nmin_backoff = 60\nlifetime = 86400\n[outbound]\n'
        'route = "smtp://relay.test:587"\nusername = "u"\npassword = "p"\n'
        '[dns]\nnameservers = ["127.0.0.1:5353", "10.0.0.1"]\n'
        + DOMAIN + 'tls = "required"\nmax_backoff = 120\nretention_days = 0\n')))
    domain = settings.domains[0]
    assert settings.delivery.retry.min_backoff == 60 and settings.delivery.retry.lifetime == 86400
    # A domain inherits what it does not set and overrides the rest.
    assert (domain.retry.min_backoff, domain.retry.max_backoff, domain.retry.lifetime) == \
        (60, 120, 86400)
    assert domain.tls == "required" and domain.retention_days == 0
    assert str(settings.outbound.route) == "smtp://relay.test:587"
    assert [str(e) for e in settings.dns.nameservers] == ["127.0.0.1:5353", "10.0.0.1:53"]
    defaults = load_settings(write(tmp_path, DOMAIN, "plain.toml"))
    assert defaults.outbound.route is None  # direct MX delivery
    assert defaults.delivery.retry.delay_warning == 4 * 3600
    assert defaults.domains[0].tls == "opportunistic"


def test_unknown_route_scheme_message(tmp_path: Path) -> None:
    error, path = config_error(tmp_path, '[[domains]]\nname = "example.test"\n'
                                         'route = "smpt://mail.example.test"\n')
    assert str(error) == (f"{path}: [[domains]][1].route: "
                          "unknown scheme 'smpt' (expected smtp or lmtp)")


def test_tls_cert_without_tls_key(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("certificate")
    error, path = config_error(tmp_path, '[smtp]\ntls_cert = "cert.pem"\n' + DOMAIN)
    assert_located(error, path, "[smtp].tls_key", "tls_cert and tls_key go together")
    error, path = config_error(tmp_path, '[smtp]\ntls_key = "cert.pem"\n' + DOMAIN)
    assert_located(error, path, "[smtp].tls_cert", "tls_cert and tls_key go together")


def test_tls_cert_that_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("key")
    error, path = config_error(tmp_path, '[smtp]\ntls_cert = "tls/cert.pem"\n'
                                         'tls_key = "key.pem"\n' + DOMAIN)
    assert_located(error, path, "[smtp].tls_cert", f"no such file: {tmp_path / 'tls' / 'cert.pem'}")


def test_sqlite_folder_that_does_not_exist(tmp_path: Path) -> None:
    error, path = config_error(tmp_path, '[store]\nurl = "sqlite:///missing/spoolgate.db"\n' + DOMAIN)
    assert_located(error, path, "[store].url", f"folder does not exist: {tmp_path / 'missing'}")
    error, path = config_error(tmp_path, '[store]\nurl = "sqlite:////no/such/folder/sg.db"\n'
                               + DOMAIN)
    assert_located(error, path, "[store].url", "folder does not exist: /no/such/folder")


# -- what a good file gives -----------------------------------------------------------------------

FULL = """
[node]
name = "mx1"

[smtp]
listen = ["0.0.0.0:25", "[::]:25"]
hostname = "mx.example.test"
max_message_size = 10485760
max_recipients = 50
max_command_line = 1024
max_line_length = 2000
max_sessions = 100
max_sessions_per_ip = 5
idle_timeout = 60
max_errors = 10
max_received_headers = 30
workers = 2
tls_cert = "tls/cert.pem"
tls_key = "{key}"

[store]
url = "sqlite:///var/spoolgate.db"
group_commit_wait_ms = 2.5
auto_migrate = false

[web]
listen = "[::1]:8080"

[log]
level = "debug"
format = "json"
file = "logs/spoolgate.log"

[[domains]]
name = "Example.TEST."
route = "lmtp://[2001:db8::1]"
recipients = ["Alice", "bob"]

[[domains]]
name = "other.test"
route = "smtp://mail.other.test:2525"
"""


def test_full_config_loads_with_the_right_values(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "var").mkdir()
    (etc / "tls" / "cert.pem").write_text("certificate")
    key = tmp_path / "elsewhere" / "key.pem"
    key.parent.mkdir()
    key.write_text("key")
    path = write(etc, FULL.format(key=key))

    settings = load_settings(path)

    assert settings.source == path.resolve()
    assert settings.node.name == "mx1"
    assert settings.smtp == SmtpSettings(
        listen=(Endpoint("0.0.0.0", 25), Endpoint("::", 25)), hostname="mx.example.test",
        max_message_size=10_485_760, max_recipients=50, max_command_line=1024,
        max_line_length=2000, max_sessions=100, max_sessions_per_ip=5, idle_timeout=60.0,
        max_errors=10, max_received_headers=30, workers=2,
        tls_cert=etc / "tls" / "cert.pem", tls_key=key)
    assert isinstance(settings.smtp.idle_timeout, float)
    assert [str(endpoint) for endpoint in settings.smtp.listen] == ["0.0.0.0:25", "[::]:25"]
    assert settings.store.url == f"sqlite:///{etc / 'var' / 'spoolgate.db'}"
    assert settings.store.group_commit_wait_ms == 2.5
    assert settings.store.auto_migrate is False
    assert settings.web == WebSettings(listen=Endpoint("::1", 8080))
    assert settings.log == LogSettings(level="debug", format="json",
                                       file=etc / "logs" / "spoolgate.log")
    assert settings.domains == (
        DomainSettings("example.test", Route("lmtp", "2001:db8::1", 24),
                       frozenset({"alice", "bob"})),
        DomainSettings("other.test", Route("smtp", "mail.other.test", 2525), None))
    assert str(settings.domains[0].route) == "lmtp://[2001:db8::1]:24"
    assert settings.domain("EXAMPLE.test") is settings.domains[0]
    assert settings.domain("evil.test") is None
    assert settings.domains[0].accepts_local_part("ALICE")
    assert not settings.domains[0].accepts_local_part("carol")
    assert settings.domains[1].accepts_local_part("anyone")


def test_relative_paths_resolve_against_the_config_folder_not_the_working_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    (etc / "data").mkdir(parents=True)
    (etc / "cert.pem").write_text("certificate")
    (etc / "key.pem").write_text("key")
    path = write(etc, '[smtp]\ntls_cert = "cert.pem"\ntls_key = "./key.pem"\n'
                      '[store]\nurl = "sqlite:///data/sg.db"\n[log]\nfile = "sg.log"\n' + DOMAIN)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(Path("..") / "etc" / "spoolgate.toml")

    assert settings.source == path.resolve()
    assert settings.smtp.tls_cert == etc / "cert.pem"
    assert settings.smtp.tls_key.resolve() == etc / "key.pem"
    assert settings.store.url == f"sqlite:///{etc / 'data' / 'sg.db'}"
    assert settings.log.file == etc / "sg.log"


def test_defaults_when_sections_are_absent(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, DOMAIN))
    assert settings.node.name == socket.gethostname()
    assert settings.smtp == SmtpSettings()
    assert settings.smtp.listen == (Endpoint("127.0.0.1", 2525),)
    assert (settings.smtp.max_message_size, settings.smtp.max_recipients,
            settings.smtp.max_received_headers) == (26_214_400, 100, 50)
    assert settings.smtp.tls_cert is None and settings.smtp.tls_key is None
    assert settings.store.url == f"sqlite:///{tmp_path / 'spoolgate.db'}"
    assert (settings.store.group_commit_wait_ms, settings.store.auto_migrate) == (0.0, True)
    assert settings.web == WebSettings()
    assert settings.log == LogSettings("info", "text", None)
    assert settings.domains == (DomainSettings("example.test", Route("smtp", "127.0.0.1", 2526)),)


def test_empty_sections_are_defaults_too(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[node]\n[smtp]\n[store]\n[web]\n[log]\n" + DOMAIN))
    assert settings.smtp == SmtpSettings()
    assert settings.log == LogSettings()


@pytest.mark.parametrize(("route", "expected"), [
    ("smtp://mail.example.test", Route("smtp", "mail.example.test", 25)),
    ("lmtp://mail.example.test", Route("lmtp", "mail.example.test", 24)),
    ("smtp://192.0.2.1:2525", Route("smtp", "192.0.2.1", 2525)),
    ("smtp://[2001:db8::25]", Route("smtp", "2001:db8::25", 25)),
    ("lmtp://[::1]:2424", Route("lmtp", "::1", 2424)),
])
def test_routes(tmp_path: Path, route: str, expected: Route) -> None:
    text = f'[[domains]]\nname = "example.test"\nroute = "{route}"\n'
    assert load_settings(write(tmp_path, text)).domains[0].route == expected


@pytest.mark.parametrize("url", ["postgresql://root@/spoolgate?host=/var/run/postgresql",
                                 "postgresql+psycopg://user:secret@db.example.test:5432/sg"])
def test_postgresql_urls_are_kept_as_written(tmp_path: Path, url: str) -> None:
    settings = load_settings(write(tmp_path, f'[store]\nurl = "{url}"\n' + DOMAIN))
    assert settings.store.url == url


# -- spoolgate check-config -----------------------------------------------------------------------

def test_check_config_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With an anti-virus engine: a file without one is good too, with a warning (below).
    path = write(tmp_path, '[scan]\nscanners = ["builtin", "clamav"]\n' + DOMAIN)
    assert main(["check-config", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path.resolve()}: ok (1 domain(s): example.test -> smtp://127.0.0.1:2526)\n"
    assert err == ""


@pytest.mark.parametrize(("scan", "why"), [
    ("", "the built-in scanner detects only the EICAR test file"),
    ('[scan]\nscanners = ["builtin", "rspamd", "spamassassin"]\n',
     "the built-in scanner detects only the EICAR test file"),
    ('[scan]\nscanners = ["rspamd"]\n', "the configured scanners score spam"),
    ('[scan]\nscanners = []\n', "scanning is off"),
])
def test_check_config_warns_when_no_antivirus_engine_scans_the_mail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], scan: str, why: str) -> None:
    path = write(tmp_path, scan + DOMAIN + '[[domains]]\nname = "b.test"\n'
                                          'route = "smtp://127.0.0.1:2526"\n')
    assert main(["check-config", "--config", str(path)]) == 0  # a warning, not an error
    out, err = capsys.readouterr()
    assert out.startswith(f"{path.resolve()}: ok (2 domain(s)")
    assert err == (f"spoolgate: warning: {path.resolve()}: [scan].scanners: no anti-virus "
                   f"engine scans the mail of example.test, b.test ({why}); add \"clamav\" "
                   "with clamd running (docs/installing.md)\n")


def test_check_config_names_the_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[smtp]\nmax_recipients = 0\n" + DOMAIN)
    assert main(["check-config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"spoolgate: configuration error: {path.resolve()}: "
                   "[smtp].max_recipients: must be at least 1, got 0\n")


def test_check_config_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check-config", "-c", str(path)]) == 2
    assert f"{path}: no such file" in capsys.readouterr().err


# -- IMAP verification of webmail passwords per domain ------------------------------------------

def test_domain_imap_servers_are_read(tmp_path: Path) -> None:
    from spoolgate.config import ImapSettings

    ca = write(tmp_path, "not checked here\n", name="ca.pem")
    settings = load_settings(write(tmp_path, (
        DOMAIN + 'imap = "imaps://mail.example.test"\nimap_tls_ca = "ca.pem"\n'
        '[[domains]]\nname = "b.test"\nroute = "smtp://127.0.0.1:2526"\n'
        'imap = "imap://127.0.0.1:1143"\nimap_tls = "none"\n'
        '[[domains]]\nname = "c.test"\nroute = "smtp://127.0.0.1:2526"\n'
        'imap = "imap://[2001:db8::1]"\n'
        '[[domains]]\nname = "d.test"\nroute = "smtp://127.0.0.1:2526"\n')))
    a, b, c, d = settings.domains
    assert a.imap == ImapSettings("mail.example.test", 993, "implicit", ca.resolve())
    assert b.imap == ImapSettings("127.0.0.1", 1143, "none")
    assert c.imap == ImapSettings("2001:db8::1", 143, "starttls")
    assert d.imap is None
    assert str(a.imap) == "imaps://mail.example.test:993"


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ('imap = "pop3://mail.example.test"\n', "imap", "expected imaps://host:port"),
    ('imap = "imaps://mail.example.test:0"\n', "imap", "bad port"),
    ('imap = "imaps://user@mail.example.test"\n', "imap", "expected imaps://host:port"),
    ('imap = 993\n', "imap", "expected a string"),
    ('imap_tls = "none"\n', "imap_tls", "needs imap ="),
    ('imap = "imap://mail.example.test"\nimap_tls = "none"\n', "imap_tls", "clear text"),
    ('imap = "imap://127.evil.test"\nimap_tls = "none"\n', "imap_tls", "loopback"),
    ('imap = "imaps://127.0.0.1"\nimap_tls = "none"\n', "imap_tls", "only for imap://"),
    ('imap = "imaps://127.0.0.1"\nimap_tls = "maybe"\n', "imap_tls", "unknown value"),
    ('imap = "imaps://127.0.0.1"\nimap_tls_ca = "missing.pem"\n', "imap_tls_ca",
     "no such file"),
])
def test_imap_mistakes_name_the_key(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    error, path = config_error(tmp_path, DOMAIN + extra)
    assert_located(error, path, f"[[domains]][1].{key}", problem)
