"""The riskstrat home at the command line: ``init`` makes it and says where; a command that
needs its store or registry refuses, naming the path, instead of making an empty one; `serve`
reports a port in use before any banner; `ui` stops MLflow's server with it; `card` writes
into the home, not the current folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import get_settings
from tests.support.home import initialised_home

runner = CliRunner()

HINT = (
    "hint: run `riskstrat init` (or `make demo`), or set RISKSTRAT_HOME to an existing "
    "riskstrat home"
)

#: Every command that needs an existing serving store or model registry, with what it needs.
NEEDS_A_HOME = {
    "audit": (["audit"], "serving store"),
    "audit --patient": (["audit", "--patient", "999 725 7952"], "serving store"),
    "users add": (["users", "add", "--name", "jo", "--role", "analyst"], "serving store"),
    "users list": (["users", "list"], "serving store"),
    "users revoke": (["users", "revoke", "jo"], "serving store"),
    "serve": (["serve", "--port", "1"], "serving store"),
    "export": (["export", "--month", "2026-10", "--cohort", "falls_review"], "serving store"),
    "outcomes": (["outcomes", "--month", "2026-07", "--data", "x"], "serving store"),
    "score": (["score", "--data", "x", "--month", "2026-10"], "model registry"),
    "predict": (
        ["predict", "--data", "x", "--as-of", "2026-11-01", "--out", "p.csv"],
        "model registry",
    ),
    "promote": (["promote"], "model registry"),
    "models": (["models"], "model registry"),
    "card": (["card", "champion"], "model registry"),
    "ui": (["ui", "--port", "1"], "model registry"),
}


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    """An empty current folder, and no RISKSTRAT_HOME: the home would be ./.riskstrat."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("RISKSTRAT_HOME", raising=False)
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """RISKSTRAT_HOME names a folder that does not exist yet."""
    path = tmp_path / "home"
    monkeypatch.setenv("RISKSTRAT_HOME", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("name", NEEDS_A_HOME)
def test_a_command_refuses_a_missing_home_and_creates_nothing(empty_folder, name):
    args, what = NEEDS_A_HOME[name]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    home = empty_folder / ".riskstrat"
    file = "serving.db" if what == "serving store" else "mlflow.db"
    assert _lines(result.output)[-2:] == [
        f"error: no riskstrat home at {home} (looked for its {what}, {home / file})",
        HINT,
    ]
    assert list(empty_folder.iterdir()) == []  # no ./.riskstrat, nothing else


def test_the_refusal_names_the_home_riskstrat_home_names(home):
    result = runner.invoke(app, ["users", "list"])
    assert result.exit_code == 1
    assert f"error: no riskstrat home at {home}" in result.output
    assert not home.exists()


def test_a_home_without_its_store_says_which_file_is_missing(home):
    home.mkdir()
    (home / "rejects").mkdir()  # what `riskstrat validate` leaves: not a home
    result = runner.invoke(app, ["audit"])
    assert result.exit_code == 1
    assert _lines(result.output)[-2:] == [
        f"error: no serving store at {home / 'serving.db'}: {home} is not an initialised "
        "riskstrat home",
        HINT,
    ]


def test_an_explicit_sqlite_store_elsewhere_is_named(home, tmp_path, monkeypatch):
    elsewhere = tmp_path / "db" / "serving.db"
    monkeypatch.setenv("RISKSTRAT_DATABASE_URL", f"sqlite:///{elsewhere}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["users", "list"])
    assert result.exit_code == 1
    assert f"error: no serving store at {elsewhere}" in result.output
    assert not elsewhere.parent.exists()


@pytest.mark.slow  # MLflow makes its tables
def test_init_makes_the_home_says_where_and_a_second_init_changes_nothing(empty_folder):
    made = runner.invoke(app, ["init"])
    assert made.exit_code == 0, made.output
    home = empty_folder / ".riskstrat"
    assert f"initialised the riskstrat home at {home}" in made.output
    assert f"serving store:  {home / 'serving.db'}" in made.output
    assert f"model registry: {home / 'mlflow.db'}" in made.output
    assert f"set RISKSTRAT_HOME={home}" in made.output
    assert {p.name for p in home.iterdir()} >= {"serving.db", "mlflow.db", "mlartifacts"}
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*")}
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 0, again.output
    assert f"the riskstrat home at {home} exists already: nothing to do" in again.output
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*")} == before
    # The commands find it now: an empty store, an empty registry.
    listed = runner.invoke(app, ["users", "list"])
    assert listed.exit_code == 0, listed.output
    models = runner.invoke(app, ["models"])
    assert models.exit_code == 1 and "no versions of" in models.output
    assert "riskstrat init" not in models.output


@pytest.mark.slow  # MLflow makes its tables
def test_init_with_riskstrat_home_set_does_not_ask_to_set_it(home):
    made = runner.invoke(app, ["init"])
    assert made.exit_code == 0, made.output
    assert f"initialised the riskstrat home at {home}" in made.output
    assert "set RISKSTRAT_HOME" not in made.output


def test_users_add_works_in_an_initialised_home(home, tmp_path):
    initialised_home(home)
    added = runner.invoke(app, ["users", "add", "--name", "jo", "--role", "analyst",
                                "--key-file", str(tmp_path / "jo.key")])  # fmt: skip
    assert added.exit_code == 0, added.output


# ---- audit --patient as written --------------------------------------------------------------


def test_audit_takes_an_nhs_number_as_written(home):
    from riskstrat.store import Store
    from riskstrat.store.audit import access_record

    initialised_home(home)
    settings = get_settings()
    store = Store(settings.serving_database_url)
    store.audit.record(
        access_record(actor="jo", route="GET /x", nhs_numbers=["9997257952"],
                      key=settings.pseudonym_key.get_secret_value())
    )  # fmt: skip
    store.dispose()
    for typed in ("9997257952", "999 725 7952", "999-725-7952"):
        result = runner.invoke(app, ["audit", "--patient", typed])
        assert result.exit_code == 0, result.output
        assert "(1 reads)" in result.output and "jo" in result.output, typed
    for bad in ("999 725 795", "999_725_7952", "9997257953"):
        refused = runner.invoke(app, ["audit", "--patient", bad])
        assert refused.exit_code == 2
        assert "error: --patient must be a valid NHS number" in refused.output


# ---- serve: a port in use --------------------------------------------------------------------


@pytest.fixture
def held_port():
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_reports_a_port_in_use_before_any_banner(home, held_port, monkeypatch):
    import uvicorn

    initialised_home(home)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    result = runner.invoke(app, ["serve", "--port", str(held_port)])
    assert result.exit_code == 1
    assert _lines(result.output) == [
        f"error: port {held_port} on 127.0.0.1 is in use",
        "hint: stop the other server or pass --port",
    ]
    assert "riskstrat API" not in result.output and started == []


def test_serve_exits_non_zero_when_the_server_cannot_start(home, monkeypatch):
    import uvicorn

    initialised_home(home)
    seen = {}

    def fails(app_, **kwargs):
        seen.update(kwargs)
        raise SystemExit(3)  # uvicorn's startup failure

    monkeypatch.setattr(uvicorn, "run", fails)
    result = runner.invoke(app, ["serve", "--port", str(_free_port())])
    assert result.exit_code == 1
    assert "error: the API server could not start on 127.0.0.1:" in result.output
    assert seen["server_header"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- card: into the home ---------------------------------------------------------------------


class _FakeRegistry:
    """The two calls `riskstrat card` makes, answered from a folder of card files."""

    def describe(self, name, version):
        from datetime import UTC, datetime

        from riskstrat.modelling.registry import ModelVersionInfo

        return ModelVersionInfo(name=name, version="3", aliases=("champion",), run_id="r1",
                                created_at=datetime.now(UTC), metrics={}, tags={})  # fmt: skip

    def download_artifacts(self, run_id, name, dst: Path) -> Path:
        folder = dst / name
        folder.mkdir(parents=True)
        (folder / "card.md").write_text("# card\n")
        (folder / "card.html").write_text("<h1>card</h1>\n")
        return folder


def test_card_writes_into_the_home_not_the_current_folder(home, tmp_path, monkeypatch):
    import riskstrat.modelling.registry

    initialised_home(home)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(riskstrat.modelling.registry, "registry_for", lambda s: _FakeRegistry())
    result = runner.invoke(app, ["card", "champion"])
    assert result.exit_code == 0, result.output
    folder = home / "cards" / f"{get_settings().model_name}-v3"
    assert (folder / "card.md").read_text() == "# card\n" and (folder / "card.html").is_file()
    assert str(folder / "card.md") in result.output.replace("\n", "")  # where it went
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp left
    chosen = tmp_path / "mine"
    again = runner.invoke(app, ["card", "champion", "--out", str(chosen)])
    assert again.exit_code == 0, again.output
    assert (chosen / "card.md").is_file() and list(cwd.iterdir()) == []


# ---- ui: MLflow's server stops with it ---------------------------------------------------------


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every process: pid -> (parent pid, process group, state), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_ui_stops_the_mlflow_server(tmp_path, stop_with):
    home = initialised_home(tmp_path / "home")
    port = _free_port()
    env = {**os.environ, "RISKSTRAT_HOME": str(home)}
    command = [sys.executable, "-m", "riskstrat.cli", "ui", "--port", str(port)]
    ui = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert ui.poll() is None, "riskstrat ui exited before MLflow listened"
            assert time.monotonic() < deadline, "MLflow's UI did not listen within 90 s"
            time.sleep(0.2)
        table = _processes()
        [server] = [pid for pid, (ppid, _, _) in table.items() if ppid == ui.pid]
        group = table[server][1]
        assert group == server != table[ui.pid][1]  # MLflow leads a process group of its own
        members = {pid for pid, (_, pgid, _) in table.items() if pgid == group}
        assert len(members) >= 2  # the server and at least one worker
        ui.send_signal(stop_with)
        assert ui.wait(timeout=30) == 128 + stop_with
        left = {
            pid
            for pid, (_, pgid, state) in _processes().items()
            if (pgid == group or pid in members) and state != "Z"
        }
        assert left == set()
        assert not _listening(port)
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
