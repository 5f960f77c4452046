"""Commands of the serving side: serve the API, manage its users, report the audit trail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from riskstrat.cli.common import console, library_errors, out, parse_date, setup
from riskstrat.errors import NotFoundError, UsageError


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
    bind_host, bind_port = host or settings.host, port or settings.port
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
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        access_log=False,
        log_level=os.environ.get("RISKSTRAT_LOG_LEVEL", "info").lower(),
    )


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
    try:
        pcns = check_pcns(pcn or ([] if role in ("pcn_team", "care_coordinator") else ["*"]))
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings = get_settings()
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
        str | None, typer.Option(help="NHS number: who has looked at this record?")
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
    from riskstrat.nhs_number import is_valid_nhs_number
    from riskstrat.store import Store
    from riskstrat.store.audit import pseudonymise

    setup()
    settings = get_settings()
    stored = None
    if patient is not None:
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
