"""Commands of the serving side: serve the API, manage its users, report the audit trail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from riskstrat.cli.common import console, library_errors, out, parse_date, setup
from riskstrat.cli.home import require_store
from riskstrat.errors import ConflictError, NotFoundError, RiskstratError, UsageError


def serve(
    host: Annotated[str | None, typer.Option(help="Interface; default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default 8000.")] = None,
) -> None:
    """Run the API (credentials: `riskstrat users add`, or OIDC tokens)."""
    import uvicorn

    from riskstrat.config import get_settings
    from riskstrat.service.app import create_app

    setup()
    settings = get_settings()
    require_store(settings)  # the service would make an empty one: refuse it here
    bind_host, bind_port = host or settings.host, port or settings.port
    check_port(bind_host, bind_port)  # a port in use is reported before any banner
    app = create_app(settings)
    base = f"http://{bind_host}:{bind_port}"
    console.print(
        f"\n[bold]riskstrat API[/] on {base}\n"
        f"  docs:     {base}/docs\n"
        f"  health:   {base}/health\n"
        f"  keys:     riskstrat users add --name NAME --role pcn_team --pcn U12345\n"
        f'  example:  curl -H "Authorization: Bearer $KEY" '
        f"'{base}/api/v1/cohorts/falls_review?capacity=5'\n",
        highlight=False,
    )
    try:
        uvicorn.run(
            app,
            host=bind_host,
            port=bind_port,
            access_log=False,
            log_level=os.environ.get("RISKSTRAT_LOG_LEVEL", "info").lower(),
            server_header=False,  # no "Server: uvicorn" (nor its version) on any response
        )
    except SystemExit as exc:  # uvicorn's way of saying it could not start
        if exc.code in (0, None):
            raise
        check_port(bind_host, bind_port)  # taken since the check above: say so
        raise RiskstratError(
            f"the API server could not start on {bind_host}:{bind_port}",
            hint="its log above says why; rerun with RISKSTRAT_LOG_LEVEL=debug for more",
        ) from None


def check_port(host: str, port: int) -> None:
    """Refuse, before anything is printed, a host and port the server could not listen on:
    each address of ``host`` is bound as the server would bind it (SO_REUSEADDR, as asyncio
    does on POSIX, so that a port left in TIME_WAIT by a server just stopped stays usable,
    while one another program listens on is refused), then released."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise UsageError(
            f"--host {host} is not an address of this machine ({exc.strerror})",
            hint="pass --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
        ) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConflictError(
                        f"port {port} on {host} is in use",
                        hint="stop the other server or pass --port",
                    ) from None
                if exc.errno == errno.EACCES:
                    raise ConflictError(
                        f"not allowed to listen on port {port} on {host}",
                        hint="pass --port with a port above 1023",
                    ) from None
                raise ConflictError(
                    f"cannot listen on {host}:{port}: {exc.strerror}",
                    hint="pass --host with an address of this machine, e.g. 127.0.0.1",
                ) from None


users_app = typer.Typer(help="API users: keys with one role and the PCNs they may see.")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Option(help="Who holds the key (unique).")],
    role: Annotated[str, typer.Option(help="pcn_team, care_coordinator, analyst or admin.")],
    pcn: Annotated[
        list[str] | None,
        typer.Option(help="A PCN in scope (repeat for more); '*' for every PCN."),
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, max=730, help="Days until the key expires.")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="Write the key to this file (mode 600) instead of printing it."),
    ] = None,
) -> None:
    """Create a user and print their API key once (only its hash is stored)."""
    from datetime import UTC, datetime, timedelta

    from riskstrat.config import acting_user, get_settings
    from riskstrat.service.auth import ROLES, check_pcns, new_api_key
    from riskstrat.store import Store

    setup()
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}")
    if role == "admin" and any(p != "*" for p in pcn or []):
        # An admin reads the whole audit trail, which is kept per reader, not per patient's
        # PCN: a trail cut to some PCNs could answer "nobody has looked at this record"
        # wrongly, so a PCN is refused rather than stored and ignored.
        raise UsageError(
            "an admin key reads the whole audit trail: --pcn does not apply to it",
            hint="leave out --pcn (or give --pcn '*') for an admin; PCNs scope pcn_team and "
            "care_coordinator keys",
        )
    try:
        pcns = check_pcns(pcn or ([] if role in ("pcn_team", "care_coordinator") else ["*"]))
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings = get_settings()
    require_store(settings)  # a key in a store no server reads would be a trap
    new = new_api_key()
    expires = datetime.now(UTC) + timedelta(days=days or settings.api_key_days)
    store = Store(settings.serving_database_url)
    try:
        store.create_schema()
        with library_errors():  # a name taken already
            store.users.add(
                name=name, role=role, pcns=pcns, key_prefix=new.prefix, key_hash=new.hash,
                expires_at=expires, created_by=acting_user(),
            )  # fmt: skip
    finally:
        store.dispose()
    console.print(
        f"added {name} ({role}, PCNs {', '.join(pcns)}), key expires {expires:%Y-%m-%d}",
        highlight=False,
    )
    if key_file is not None:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new.key + "\n")
        console.print(f"key written to {key_file}", highlight=False)
    else:
        console.print("the key is shown once; store it safely:", highlight=False)
        out.print(new.key, highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List users with role, PCNs, expiry and whether revoked (never keys)."""
    from datetime import UTC, datetime

    from riskstrat.config import get_settings
    from riskstrat.store import Store

    setup()
    require_store()
    store = Store(get_settings().serving_database_url)
    store.create_schema()
    users = store.users.all()
    store.dispose()
    table = Table(title="API users")
    for col in ("name", "role", "PCNs", "created", "expires", "state"):
        table.add_column(col)
    now = datetime.now(UTC)
    for u in users:
        state = (
            "revoked" if u["revoked_at"] else ("expired" if u["expires_at"] <= now else "active")
        )
        table.add_row(
            u["name"], u["role"], ", ".join(u["pcns"]), f"{u['created_at']:%Y-%m-%d}",
            f"{u['expires_at']:%Y-%m-%d}", state,
        )  # fmt: skip
    out.print(table)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="The user to revoke.")]) -> None:
    """Revoke a user's key at once."""
    from riskstrat.config import get_settings
    from riskstrat.store import Store

    setup()
    require_store()
    store = Store(get_settings().serving_database_url)
    store.create_schema()
    done = store.users.revoke(name)
    store.dispose()
    if not done:
        raise NotFoundError(
            f"no active user called {name!r}", hint="`riskstrat users list` shows every user"
        )
    out.print(f"revoked {name}")


def audit_report(
    patient: Annotated[
        str | None,
        typer.Option(
            help="NHS number, as ten digits or as written (999 725 7952): who has looked at "
            "this record?"
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="What has this user looked at?")] = None,
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    index: Annotated[
        bool,
        typer.Option(
            "--index",
            help="Only bring the per-patient index up to date, and say how many reads it took "
            "in. Run it nightly, so that a patient query does not wait for the backlog.",
        ),
    ] = False,
) -> None:
    """Report the audit trail: who read which patients' data, when, by which route, and why."""
    from datetime import UTC, datetime

    from riskstrat.config import get_settings
    from riskstrat.nhs_number import is_valid_nhs_number, normalise_nhs_number
    from riskstrat.store import Store
    from riskstrat.store.audit import pseudonymise

    setup()
    settings = get_settings()
    stored = None
    if patient is not None:
        patient = normalise_nhs_number(patient)  # "999 725 7952" as written on a letter
        if not is_valid_nhs_number(patient):
            raise UsageError("--patient must be a valid NHS number")
        stored = (
            patient
            if settings.audit_identify_patients
            else pseudonymise(patient, settings.pseudonym_key.get_secret_value())
        )
    start = (
        datetime.combine(parse_date(since, "--since"), datetime.min.time(), UTC) if since else None
    )
    require_store(settings)
    store = Store(settings.serving_database_url)
    store.create_schema()
    if index:
        done = store.audit.index()
        store.dispose()
        out.print(f"reads newly indexed by patient: {done:,}")
        return
    records = store.audit.records(actor=user, patient=stored, since=start, limit=limit)
    store.dispose()
    title = "Who has looked at this record" if patient else "Audit trail"
    table = Table(title=f"{title} ({len(records)} reads)")
    for col in ("when (UTC)", "who", "role", "organisations", "route", "patients", "purpose"):
        table.add_column(col)
    for r in records:
        table.add_row(
            f"{r['at']:%Y-%m-%d %H:%M:%S}", r["actor"], r["role"] or "-",
            ", ".join(r["organisations"] or []) or "-", r["route"], str(r["n_patients"]),
            r["purpose"] or "-",
        )  # fmt: skip
    out.print(table)
