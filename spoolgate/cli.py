"""The ``spoolgate`` command: thin verbs over the same functions the server uses.

``serve``, ``demo``, ``check-config``, ``migrate``, ``routes``,
``queue list|show|summary|flush|hold|release|delete|bounce``,
``quarantine list|show|release|delete``, ``scan FILE...``, ``train``, ``web``,
``user add|passwd|list|disable|enable|totp`` and ``digest send``.
Errors are printed as one line naming what is wrong and the exit status is 2
for a configuration mistake, 1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from spoolgate import __version__
from spoolgate.config import ConfigError, Settings, load_settings
from spoolgate.mail.queueid import is_queue_id
from spoolgate.store.migrations import LATEST, SchemaError, migrate
from spoolgate.store.store import QueueEntry, StoreError, open_store

DEFAULT_CONFIG = "/etc/spoolgate/spoolgate.toml"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the file; print what is valid but unwise as warnings (exit status 0)."""
    from spoolgate.scan.engines import antivirus_warning

    settings = _settings(args)
    domains = ", ".join(f"{d.name} -> {d.route}" for d in settings.domains)
    print(f"{settings.source}: ok ({len(settings.domains)} domain(s): {domains})")
    warning = antivirus_warning(settings)
    if warning is not None:
        print(f"spoolgate: warning: {warning}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from spoolgate.app import run, serve
    from spoolgate.ops.logging import setup_logging

    settings = _settings(args)
    setup_logging(settings.log.level, settings.log.format, settings.log.file)
    run(serve(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from spoolgate.demo import find_clamd, scan_notices, write_demo_config

    clamd = find_clamd()
    config = write_demo_config(Path(args.dir), clamd)
    settings = load_settings(config)
    account = _demo_account(settings)
    print(f"demo configuration: {config}\n"
          "SMTP on 127.0.0.1:2525 for example.test, relayed to 127.0.0.1:2526; "
          "store under the same folder.\n"
          f"webmail on http://127.0.0.1:8025/ {account}", file=sys.stderr)
    for notice in scan_notices(settings, clamd):
        print(notice, file=sys.stderr)
    print("Ctrl-C stops it.", file=sys.stderr)
    args.config = str(config)
    return cmd_serve(args)


def _demo_account(settings: Settings) -> str:
    """A webmail account for the demo, made once with a random password shown once."""
    import secrets

    from spoolgate.webmail.users import UserError, add_user

    email = f"demo@{settings.domains[0].name}"
    password = secrets.token_urlsafe(12)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        add_user(store, email, password, domains=[email.rpartition("@")[2]])
    except UserError:
        return f"(account {email}: password as shown at its first start, or set it with "\
               f"'spoolgate user passwd {email} --config ...')"
    finally:
        store.close()
    return f"(account {email}, password {password})"


def cmd_migrate(args: argparse.Namespace) -> int:
    from spoolgate.store.engine import create_engine

    settings = _settings(args)
    engine = create_engine(settings.store.url)
    try:
        before = migrate(engine, auto=True)
    finally:
        engine.dispose()
    print(f"schema upgraded from version {before} to {LATEST}" if before < LATEST
          else f"schema is up to date (version {LATEST})")
    return 0


def _format_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _entry_json(entry: QueueEntry) -> dict:
    data = asdict(entry)
    data["received_at"] = _format_time(entry.received_at)
    return data


def cmd_queue_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        entries = store.list_queue(state=args.state, domain=args.domain, limit=args.limit)
    finally:
        store.close()
    if args.json:
        json.dump([_entry_json(e) for e in entries], sys.stdout, indent=1)
        print()
        return 0
    if not entries:
        print("Mail queue is empty")
        return 0
    print(f"{'-Queue ID-':<16}{'--Size--':>9} {'----Arrival Time----':<20} -Sender/Recipient-------")
    for entry in entries:
        print(f"{entry.queue_id:<16}{entry.size:>9} {_format_time(entry.received_at):<20} "
              f"{entry.sender or '<>'}")
        for rcpt in entry.recipients:
            reply = f" ({rcpt.last_reply})" if rcpt.last_reply else ""
            print(f"{'':<47}{rcpt.address} [{rcpt.state}]{reply}")
        print()
    print(f"-- {len(entries)} message(s)" + (f" (limit {args.limit})" if len(entries) == args.limit else ""))
    return 0


def cmd_queue_show(args: argparse.Namespace) -> int:
    if not is_queue_id(args.queue_id):
        print(f"spoolgate: {args.queue_id!r} is not a queue ID", file=sys.stderr)
        return 1
    settings = _settings(args)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        detail = store.show(args.queue_id)
    finally:
        store.close()
    if detail is None:
        print(f"spoolgate: no message {args.queue_id} in the store", file=sys.stderr)
        return 1
    if args.json:
        data = asdict(detail)
        json.dump(data, sys.stdout, indent=1)
        print()
        return 0
    entry = detail.entry
    print(f"Queue ID:   {entry.queue_id}\nArrived:    {_format_time(entry.received_at)} "
          f"on {detail.node}\nClient:     [{detail.client_ip}] helo={detail.helo}"
          f"{' tls=' + detail.tls if detail.tls else ''}\nSender:     <{entry.sender}>\n"
          f"Size:       {entry.size}\nBody:       {detail.body_type}"
          f"{' SMTPUTF8' if detail.smtputf8 else ''}\n"
          f"DSN:        ret={detail.ret or '-'} envid={detail.envid or '-'}\nRecipients:")
    for rcpt in entry.recipients:
        print(f"  {rcpt.address}  state={rcpt.state} attempts={rcpt.attempts} "
              f"notify={rcpt.notify or '-'} orcpt={rcpt.orcpt or '-'}"
              + (f"\n    last reply: {rcpt.last_reply}" if rcpt.last_reply else ""))
    print("Events:")
    for event in detail.events:
        who = f" {event.recipient}" if event.recipient else ""
        print(f"  {_format_time(event.at)} {event.node} {event.kind}{who}: {event.detail}")
    return 0


def _queue(settings: Settings):
    from spoolgate.store.queue import Queue

    store = open_store(settings.store.url, settings.store.auto_migrate)
    return Queue(store, settings.node.name)


def _target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    queue_id = getattr(args, "queue_id", None)
    if queue_id is not None and not is_queue_id(queue_id):
        raise SystemExit(f"spoolgate: {queue_id!r} is not a queue ID")
    domain = getattr(args, "domain", None)
    if queue_id is None and domain is None and args.queue_verb != "flush":
        raise SystemExit("spoolgate: name a queue ID or --domain")
    return domain, queue_id


def cmd_queue_move(args: argparse.Namespace) -> int:
    """flush, hold, release, delete and bounce."""
    from spoolgate.delivery.control import bounce

    settings = _settings(args)
    domain, queue_id = _target(args)
    queue = _queue(settings)
    try:
        if args.queue_verb == "flush":
            count = queue.flush(domain=domain, queue_id=queue_id)
        elif args.queue_verb == "hold":
            count = queue.hold(domain=domain, queue_id=queue_id)
        elif args.queue_verb == "release":
            count = queue.release(domain=domain, queue_id=queue_id)
        elif args.queue_verb == "delete":
            count = queue.delete(queue_id, settings.delivery.failed_retention_days * 86400)
        else:
            count = bounce(settings, queue, queue_id)
    finally:
        queue.store.close()
    verb = {"flush": "made due now", "hold": "put on hold", "release": "released",
            "delete": "deleted", "bounce": "bounced"}[args.queue_verb]
    print(f"{count} recipient(s) {verb}")
    return 0 if count or args.queue_verb == "flush" else 1


def cmd_queue_summary(args: argparse.Namespace) -> int:
    from spoolgate.store.queue import AGE_BUCKETS

    queue = _queue(_settings(args))
    try:
        rows = queue.summary()
    finally:
        queue.store.close()
    heads = [f"{b:g}" if b != float("inf") else f"{AGE_BUCKETS[-2]:g}+" for b in AGE_BUCKETS]
    print(f"{'':<28}{'state':<12}{'T':>6}" + "".join(f"{h:>6}" for h in heads))
    totals = [0] * len(AGE_BUCKETS)
    for domain, state, counts in rows:
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        print(f"{domain:<28}{state:<12}{sum(counts):>6}" + "".join(f"{c:>6}" for c in counts))
    print(f"{'TOTAL':<28}{'':<12}{sum(totals):>6}" + "".join(f"{c:>6}" for c in totals))
    print("(columns: recipients by age in minutes, as in Postfix's qshape)")
    return 0


def cmd_quarantine_release(args: argparse.Namespace) -> int:
    """Rescan (the scanners may have learned since), record the verdict, then deliver.

    A virus found on the rescan keeps the message in quarantine unless ``--force``.
    """
    import asyncio

    from spoolgate.app import build_scanning
    from spoolgate.intake.release import ReleaseOutcome, release_quarantined

    settings = _settings(args)
    _target(args)
    queue = _queue(settings)
    try:
        scanning = build_scanning(settings, queue.store)
        result = asyncio.run(release_quarantined(queue, args.queue_id, scanning,
                                                 force=args.force))
    finally:
        queue.store.close()
    if result.outcome == ReleaseOutcome.INFECTED:
        print(f"spoolgate: the rescan still finds a virus ({result.reason}); "
              "--force releases it anyway", file=sys.stderr)
        return 1
    if result.outcome == ReleaseOutcome.SCAN_FAILED:
        print(f"spoolgate: the rescan failed ({result.reason}); try again, or --force",
              file=sys.stderr)
        return 1
    if result.outcome != ReleaseOutcome.RELEASED:
        print(f"spoolgate: {args.queue_id} is not in quarantine", file=sys.stderr)
        return 1
    print(f"{result.released} recipient(s) released from quarantine ({result.note})")
    return 0


def cmd_digest_send(args: argparse.Namespace) -> int:
    """Queue the quarantine digests that are due (with --now, every subscriber's); each
    lists only quarantined mail that arrived since that user's last digest."""
    import asyncio

    from spoolgate.app import send_digests_now

    settings = _settings(args)
    if not settings.digest.enabled or settings.digest.public_url is None:
        print("spoolgate: digests are off: set [digest] public_url (and enabled = true)",
              file=sys.stderr)
        return 1
    sent = asyncio.run(send_digests_now(settings, force=args.now))
    print(f"{sent} digest(s) queued")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """One JSON line per message file, in order: the verdict of the configured scanners and
    policy, the score, symbols, viruses, authentication results and time taken."""
    import asyncio

    from spoolgate.app import build_scanning
    from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient

    settings = _settings(args)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        scanning = build_scanning(settings, store)
        if scanning is None:
            print("spoolgate: no scanner is configured ([scan] scanners is empty)",
                  file=sys.stderr)
            return 1
        rcpt = args.rcpt or f"postmaster@{settings.domains[0].name}"
        envelope = Envelope(args.sender, (Recipient(rcpt),),
                            ClientInfo(args.client_ip, args.helo))
        return asyncio.run(_scan_files(scanning, envelope, args.files, max(1, args.jobs)))
    finally:
        store.close()


async def _scan_files(scanning, envelope, files: list[str], jobs: int) -> int:
    """Scan *files* *jobs* at a time; print each result as soon as those before it are out."""
    import asyncio

    from spoolgate.scan.training import strip_from_line

    slots = asyncio.Semaphore(jobs)

    async def one(path: str) -> dict | None:
        try:
            data = strip_from_line(await asyncio.to_thread(Path(path).read_bytes))
        except OSError as error:
            print(f"spoolgate: {path}: {error.strerror}", file=sys.stderr)
            return None
        async with slots:
            started = time.perf_counter()
            verdict = await scanning.verdict(envelope, data, "")
            return _scan_result(path, verdict, time.perf_counter() - started)

    tasks = [asyncio.ensure_future(one(path)) for path in files]
    failed = 0
    for task in tasks:
        result = await task
        if result is None:
            failed += 1
        else:
            print(json.dumps(result), flush=True)
    return 1 if failed else 0


def _scan_result(path: str, verdict, seconds: float) -> dict:
    findings = verdict.findings
    return {
        "file": path, "verdict": verdict.action.value, "score": verdict.score,
        "reason": verdict.reason,
        "symbols": {s.name: s.score for f in findings for s in f.symbols},
        "viruses": [v for f in findings for v in f.viruses],
        "authentication": [{"method": a.method, "result": a.result,
                            **dict(a.properties), **({"reason": a.reason} if a.reason else {})}
                           for f in findings for a in f.authentication],
        "errors": {f.scanner: f.error for f in findings if f.error},
        "unscannable": {f.scanner: f.unscannable for f in findings if f.unscannable},
        "scanners": {f.scanner: round(f.seconds, 4) for f in findings},
        "seconds": round(seconds, 4)}


def cmd_train(args: argparse.Namespace) -> int:
    """Teach the built-in Bayes classifier and n-gram model from files, folders, Maildirs
    or mbox files."""
    from spoolgate.scan.bayes import BayesClassifier
    from spoolgate.scan.training import train
    from spoolgate.store.bayes import BayesStore

    if not args.spam and not args.ham:
        print("spoolgate: nothing to learn (give --spam PATH and/or --ham PATH)", file=sys.stderr)
        return 2
    missing = [p for p in (*args.spam, *args.ham) if not Path(p).exists()]
    if missing:
        print(f"spoolgate: {missing[0]}: no such file or folder", file=sys.stderr)
        return 1
    settings = _settings(args)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        classifier = BayesClassifier(BayesStore(store.engine, store.write_lock))
        report = train(classifier, [Path(p) for p in args.spam], [Path(p) for p in args.ham])
        spam, ham, modelled = classifier.store.all_totals()
    finally:
        store.close()
    print(f"learned {report.learned_spam} spam and {report.learned_ham} ham "
          f"({report.skipped} already known) in {report.seconds:.1f}s; "
          f"the classifier now knows {spam} spam and {ham} ham, its n-gram model {modelled}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """Serve only the webmail (for a node that neither receives nor delivers)."""
    from spoolgate.app import run, serve_web
    from spoolgate.ops.logging import setup_logging

    settings = _settings(args)
    setup_logging(settings.log.level, settings.log.format, settings.log.file)
    run(serve_web(settings))
    return 0


def _password(args: argparse.Namespace) -> str | None:
    """The new password: one line from standard input, or typed twice at a prompt."""
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        print("spoolgate: the two passwords differ", file=sys.stderr)
        return None
    return first


def cmd_user(args: argparse.Namespace) -> int:
    """Webmail accounts: ``add``, ``passwd``, ``list``, ``disable``, ``enable``, ``totp``."""
    from spoolgate.webmail import users
    from spoolgate.webmail.users import UserError, add_user, disable_user, list_users, set_password

    settings = _settings(args)
    store = open_store(settings.store.url, settings.store.auto_migrate)
    try:
        if args.user_verb == "list":
            for user in list_users(store):
                state = "disabled" if user.disabled else "active"
                role = user.role + (f" ({', '.join(user.domains)})" if user.domains else "")
                print(f"{user.email:<40} {state:<9} {role:<24} "
                      f"since {_format_time(user.created_at)}")
            return 0
        if args.user_verb == "role":
            users.set_role(store, args.email, args.role, args.domain or (),
                           domains=[d.name for d in settings.domains])
            _audit(store, "user.role", args.email.strip().lower(),
                   args.role + "".join(f" {d}" for d in args.domain or ()))
            print(f"{args.email.strip().lower()}: role {args.role}")
            return 0
        if args.user_verb in ("disable", "enable"):
            disable_user(store, args.email, disabled=args.user_verb == "disable")
            _audit(store, f"user.{args.user_verb}", args.email.strip().lower())
            print(f"{args.email.lower()}: {args.user_verb}d")
            return 0
        if args.user_verb == "totp":
            if args.disable:
                users.disable_totp(store, args.email)
                _audit(store, "user.totp", args.email.strip().lower(), "disabled")
                print(f"{args.email.strip().lower()}: TOTP removed; the password alone "
                      "signs in (sessions ended)")
                return 0
            enrolment = users.enable_totp(store, args.email)
            _audit(store, "user.totp", args.email.strip().lower(), "enrolled")
            print(f"{args.email.strip().lower()}: TOTP enabled (sessions ended). Add it to "
                  f"an authenticator app with this URI (or a QR code of it):\n"
                  f"{enrolment.uri}\nor type this secret: {enrolment.secret}")
            return 0
        password = _password(args)
        if password is None:
            return 1
        if args.user_verb == "add":
            user = add_user(store, args.email, password,
                            domains=[d.name for d in settings.domains], role=args.role,
                            role_domains=args.domain or ())
            _audit(store, "user.add", user.email, f"role={user.role}")
            print(f"{user.email}: account created ({user.role})")
        else:
            set_password(store, args.email, password)
            _audit(store, "user.passwd", args.email.strip().lower())
            print(f"{args.email.lower()}: password changed; signed out everywhere")
        return 0
    except UserError as error:
        print(f"spoolgate: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _role_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    from spoolgate.store.accounts import ROLES

    if default is None:
        parser.add_argument("role", choices=ROLES)
    else:
        parser.add_argument("--role", choices=ROLES, default=default,
                            help="the console role (default: user, no console)")
    parser.add_argument("--domain", action="append", metavar="DOMAIN",
                        help="a domain a domain-admin manages (repeat for several)")


def _audit(store, action: str, target: str, detail: str = "") -> None:
    """Record an operator's CLI action in the audit log, as ``cli:<os user>``."""
    import getpass

    from spoolgate.store.audit import AuditLog

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    AuditLog(store).record(time.time(), f"cli:{who}", "", action, target, detail)


def cmd_routes(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings)
    try:
        known = {status.name: status for status in queue.routes()}
    finally:
        queue.store.close()
    names = sorted({str(d.route) for d in settings.domains} | set(known))
    if args.json:
        json.dump([asdict(known[n]) if n in known else {"name": n, "state": "up"}
                   for n in names], sys.stdout, indent=1)
        print()
        return 0
    for name in names:
        status = known.get(name)
        if status is None:
            print(f"{name:<36} up (never failed)")
            continue
        since = _format_time(status.since)
        error = f"  last error: {status.last_error}" if status.last_error else ""
        print(f"{name:<36} {status.state} since {since} failures={status.failures}{error}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spoolgate", description="Email continuity gateway")
    parser.add_argument("--version", action="version", version=f"spoolgate {__version__}")
    default = os.environ.get("SPOOLGATE_CONFIG", DEFAULT_CONFIG)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", "-c", default=default,
                        help=f"configuration file (default: $SPOOLGATE_CONFIG or {DEFAULT_CONFIG})")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("serve", parents=[config], help="run the gateway").set_defaults(func=cmd_serve)
    demo = verbs.add_parser("demo", help="write a demo configuration and run the gateway")
    demo.add_argument("--dir", default="spoolgate-demo", help="folder for config, store and certificates")
    demo.set_defaults(func=cmd_demo)
    verbs.add_parser("check-config", parents=[config],
                     help="validate the configuration and exit").set_defaults(func=cmd_check_config)
    verbs.add_parser("migrate", parents=[config],
                     help="upgrade the store's schema").set_defaults(func=cmd_migrate)
    queue = verbs.add_parser("queue", help="inspect the queue").add_subparsers(dest="queue_verb",
                                                                                required=True)
    listing = queue.add_parser("list", parents=[config], help="list queued messages (like postqueue -p)")
    listing.add_argument("--state", help="only recipients in this state (queued, deferred, ...)")
    listing.add_argument("--domain", help="only recipients in this domain")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_queue_list)
    show = queue.add_parser("show", parents=[config], help="envelope, recipients and events of one message")
    show.add_argument("queue_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_queue_show)
    summary = queue.add_parser("summary", parents=[config],
                               help="recipients by domain, state and age (like qshape)")
    summary.set_defaults(func=cmd_queue_summary)
    for verb, text in (("flush", "attempt delivery now (like postqueue -f)"),
                       ("hold", "never deliver until released (like postsuper -h)"),
                       ("release", "release held mail (like postsuper -H)")):
        sub = queue.add_parser(verb, parents=[config], help=text)
        sub.add_argument("queue_id", nargs="?")
        sub.add_argument("--domain")
        sub.set_defaults(func=cmd_queue_move)
    for verb, text in (("delete", "delete a message; it is never delivered (like postsuper -d)"),
                       ("bounce", "fail a message now and tell the sender (a DSN)")):
        sub = queue.add_parser(verb, parents=[config], help=text)
        sub.add_argument("queue_id")
        sub.set_defaults(func=cmd_queue_move)
    quarantine = verbs.add_parser("quarantine", help="quarantined mail").add_subparsers(
        dest="queue_verb", required=True)
    q_list = quarantine.add_parser("list", parents=[config], help="quarantined messages")
    q_list.add_argument("--domain")
    q_list.add_argument("--limit", type=int, default=1000)
    q_list.add_argument("--json", action="store_true")
    q_list.set_defaults(func=cmd_queue_list, state="quarantined")
    q_show = quarantine.add_parser("show", parents=[config], help="one quarantined message")
    q_show.add_argument("queue_id")
    q_show.add_argument("--json", action="store_true")
    q_show.set_defaults(func=cmd_queue_show)
    q_release = quarantine.add_parser("release", parents=[config],
                                      help="rescan, then deliver a quarantined message")
    q_release.add_argument("queue_id")
    q_release.add_argument("--force", action="store_true",
                           help="release even if the rescan finds a virus")
    q_release.set_defaults(func=cmd_quarantine_release)
    q_delete = quarantine.add_parser("delete", parents=[config], help="delete it for good")
    q_delete.add_argument("queue_id")
    q_delete.set_defaults(func=cmd_queue_move, queue_verb="delete")
    scan = verbs.add_parser("scan", parents=[config],
                            help="scan message files with the configured scanners and policy")
    scan.add_argument("files", nargs="+", metavar="FILE")
    scan.add_argument("--sender", default="sender@scan.invalid")
    scan.add_argument("--rcpt", help="recipient whose domain's policy applies "
                                     "(default: the first domain's postmaster)")
    scan.add_argument("--client-ip", default="127.0.0.1")
    scan.add_argument("--helo", default="scan.invalid")
    scan.add_argument("--jobs", type=int, default=4, help="messages scanned at once (default 4)")
    scan.set_defaults(func=cmd_scan)
    learn = verbs.add_parser("train", parents=[config],
                             help="teach the built-in Bayes classifier spam and ham")
    learn.add_argument("--spam", action="append", default=[], metavar="PATH",
                       help="spam: a message file, a folder of them, a Maildir or an mbox")
    learn.add_argument("--ham", action="append", default=[], metavar="PATH",
                       help="ham (legitimate mail), in the same forms")
    learn.set_defaults(func=cmd_train)
    verbs.add_parser("web", parents=[config],
                     help="serve only the webmail").set_defaults(func=cmd_web)
    users = verbs.add_parser("user", help="webmail accounts").add_subparsers(
        dest="user_verb", required=True)
    for verb, text in (("add", "create an account (the address must be in one of the domains)"),
                       ("passwd", "set a new password (ends the user's sessions)")):
        sub = users.add_parser(verb, parents=[config], help=text)
        sub.add_argument("email")
        sub.add_argument("--password-stdin", action="store_true",
                         help="read the password from one line of standard input")
        if verb == "add":
            _role_arguments(sub, default="user")
        sub.set_defaults(func=cmd_user)
    role = users.add_parser("role", parents=[config],
                            help="set the console role: admin, domain-admin (of --domain) "
                                 "or user")
    role.add_argument("email")
    _role_arguments(role)
    role.set_defaults(func=cmd_user)
    for verb, text in (("disable", "refuse sign-in and end the user's sessions"),
                       ("enable", "allow sign-in again")):
        sub = users.add_parser(verb, parents=[config], help=text)
        sub.add_argument("email")
        sub.set_defaults(func=cmd_user)
    users.add_parser("list", parents=[config], help="every account").set_defaults(func=cmd_user)
    totp = users.add_parser("totp", parents=[config],
                            help="require a TOTP code at sign-in: prints the secret to enrol")
    totp.add_argument("email")
    totp.add_argument("--disable", action="store_true", help="remove the TOTP secret")
    totp.set_defaults(func=cmd_user)
    digest = verbs.add_parser("digest", help="the daily quarantine digest").add_subparsers(
        dest="digest_verb", required=True)
    d_send = digest.add_parser("send", parents=[config],
                               help="queue the digests due now (the server does it hourly)")
    d_send.add_argument("--now", action="store_true",
                        help="every opted-in user's digest now, whatever [digest] hour says")
    d_send.set_defaults(func=cmd_digest_send)
    routes = verbs.add_parser("routes", parents=[config], help="route health: up or down")
    routes.add_argument("--json", action="store_true")
    routes.set_defaults(func=cmd_routes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"spoolgate: configuration error: {error}", file=sys.stderr)
        return 2
    except (SchemaError, StoreError) as error:
        print(f"spoolgate: store error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
