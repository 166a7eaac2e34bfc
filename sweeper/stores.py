"""Where the two stores are and whether they answer: the MLflow tracking URI, the Optuna storage URL.

Resolution order, absolute SQLite paths (MLflow caches stores by URI string, so a relative one
would keep pointing at the first directory it was used in), reachability checks that fail within
~10 s with the password masked, SQLAlchemy engine options, and creating Optuna's RDB storage.
Nothing here trains, samples or logs runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .errors import ConfigError, TrackingUnavailable
from .masking import mask
from .names import check_name

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
STORAGE_ENV = "SWEEPER_OPTUNA_STORAGE"
DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "sweeper"  # one run's experiment when neither tracking.experiment nor $MLFLOW_EXPERIMENT_NAME names one
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"


# --- resolution -----------------------------------------------------------------------------------
def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL (``sqlite:///path``, query arguments such as ``?timeout=30``
    dropped: they are the driver's); None for other stores and ``:memory:``."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return None
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


def artifacts_beside(url: str) -> Path:
    """Where a local SQLite tracking store keeps its artifacts by default: ``artifacts/`` beside the database file
    (the working folder's for ``:memory:``)."""
    file = sqlite_file(url)
    return (file.parent if file is not None else Path()) / "artifacts"


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative/path -> sqlite:////abs/path, resolved against the current directory now."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        return "sqlite:///" + str(Path(url[len("sqlite:///") :]).resolve())
    return url


def _required_env(name: str, field: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(field, None, f"tracking=server needs the environment variable {name} (or set {field})")
    return value


def tracking_uri(cfg: DictConfig) -> str:
    """Explicit config wins, then $MLFLOW_TRACKING_URI, then (local mode) the SQLite store under mlruns/."""
    if cfg.tracking.uri:
        return absolute_sqlite(cfg.tracking.uri)
    if cfg.tracking.mode == "server":
        return _required_env("MLFLOW_TRACKING_URI", "tracking.uri")
    return absolute_sqlite(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING)


def experiment_name(cfg: DictConfig) -> str:
    """One run's experiment, as MLflow's convention has it: explicit config wins, then $MLFLOW_EXPERIMENT_NAME,
    then ``sweeper``; checked as a name (it becomes a folder under the artifact root). A sweep's experiment
    is its study name instead (one experiment per study)."""
    if cfg.tracking.experiment is not None:
        return check_name("tracking.experiment", cfg.tracking.experiment)
    env = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    return check_name("MLFLOW_EXPERIMENT_NAME", env) if env else DEFAULT_EXPERIMENT


def check_shared_stores(cfg: DictConfig) -> None:
    """Workers on other hosts (launcher=slurm) need stores they can all reach: no SQLite file, no local folder."""
    why = "workers on other hosts cannot share a SQLite file; use tracking=server or a PostgreSQL URL"
    url = storage_url(cfg)
    if url.startswith("sqlite"):
        raise ConfigError("storage", mask(url), why)
    uri = tracking_uri(cfg)
    if uri.startswith(("sqlite", "file:")) or "://" not in uri:
        raise ConfigError("tracking.uri", mask(uri), why.replace("SQLite file", "local MLflow store"))


def storage_url(cfg: DictConfig) -> str:
    """Optuna storage: `storage=` shortcut, then tracking.storage, then $SWEEPER_OPTUNA_STORAGE, then $OPTUNA_STORAGE
    (one of them required in server mode), then SQLite under mlruns/."""
    if cfg.storage or cfg.tracking.storage:
        return absolute_sqlite(cfg.storage or cfg.tracking.storage)
    env = os.environ.get(STORAGE_ENV) or os.environ.get("OPTUNA_STORAGE")  # the optuna CLI's variable as a fallback
    if cfg.tracking.mode == "server":
        return env or _required_env(STORAGE_ENV, "storage")
    return absolute_sqlite(env or DEFAULT_STORAGE)


def is_uri(location: str) -> bool:
    """An artifact location that is a URI (``s3://``, ``file://``, ``mlflow-artifacts:``), not a local folder."""
    return "://" in location or location.startswith("mlflow-artifacts:")


def artifact_location(root: str) -> str:
    """An artifact root as MLflow should store it: a local path as an absolute ``file://`` URI (a relative one was
    stored as given and resolved against the folder of whoever read the run later: the UI started elsewhere found
    nothing); a URI unchanged."""
    return root.rstrip("/") if is_uri(root) else Path(root).expanduser().resolve().as_uri()


def on_database_server(url: str) -> bool:
    """A PostgreSQL, MySQL or SQL Server URL (any ``+driver``)."""
    return "://" in url and url.split("://", 1)[0].split("+", 1)[0].lower() in DATABASE_SCHEMES


def _database_of(url: str) -> tuple | None:
    """(backend, host, port, database) of a database URL, the file of a SQLite one; None for others (http)."""
    path = sqlite_file(url)
    if path is not None:
        return ("sqlite", str(path.resolve()))
    if not on_database_server(url):
        return None
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:  # the store's own check names a malformed URL
        return None
    host = "localhost" if (u.host or "localhost") in ("localhost", "127.0.0.1", "::1") else u.host
    backend = u.get_backend_name()
    return (backend, host, u.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(backend), u.database)


def check_separate_stores(cfg: DictConfig) -> None:
    """The Optuna storage and the MLflow tracking store must be two databases: both keep an ``alembic_version``
    table, so the second to open the database found the first one's schema version and failed (Optuna's "no longer
    compatible with the table schema" traceback), after writing its own tables there."""
    storage, tracking = storage_url(cfg), tracking_uri(cfg)
    db = _database_of(storage)
    if db is not None and db == _database_of(tracking):
        raise ConfigError(
            "storage",
            mask(storage),
            f"is also the MLflow tracking store ({mask(tracking)}); Optuna and MLflow each need a database of their own "
            "(both keep an alembic_version table): e.g. sqlite:///mlruns/optuna.db, or .../optuna beside .../mlflow",
        )


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Serialize the first opening of a local SQLite store between processes. MLflow creates and migrates its
    schema on first use; two workers starting together on a new ``mlruns/mlflow.db`` would both run the
    migrations and one would crash (``duplicate column name``, ``database is locked``)."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    import fcntl

    lock_path = Path(f"{path}.lock")
    try:
        handle = open(lock_path, "a")  # noqa: SIM115  (held for the duration of the block)
    except OSError:  # a read-only folder is reported elsewhere; nothing to serialize then
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_WAL_FILES: set[Path] = set()


def use_wal(url: str) -> None:
    """Put a local SQLite store in write-ahead-log mode (once; the mode is kept in the file). In SQLite's
    default rollback mode a reader blocks a writer's commit and a waiting writer blocks new readers, so the
    MLflow UI, a notebook or this process's own system-metrics thread reading the store could stall a trial's
    logging for MLflow's 20 s busy timeout and then fail it (``database is locked``); in WAL mode readers and
    the writer never wait for each other. Best effort: the switch needs the file to itself for a moment; a store
    kept busy for 5 s by another process stays as it is until the next start tries again. At exit the log is
    written back into the database file (``_checkpoint_wal_files``)."""
    path = sqlite_file(url)
    if path is None:
        return
    import atexit
    import sqlite3

    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=5)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        if not _WAL_FILES:
            atexit.register(_checkpoint_wal_files)
        _WAL_FILES.add(path)


def _checkpoint_wal_files() -> None:
    """Write each store's log back into its database file and empty the log, so that the ``.db`` file alone holds
    everything once the command has exited (a copy of it is complete). The stores' pooled connections are never
    closed at exit (``runtime.freeze_heap``), and only the last connection's close would do this. A store another
    process is still writing keeps its log; that process empties it."""
    import sqlite3

    for path in _WAL_FILES:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=1)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a file-backed SQLite URL (e.g. mlruns/) before a store opens it."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


# --- reachability ---------------------------------------------------------------------------------
def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite waits for a busy writer (many workers); PostgreSQL fails fast and drops dead connections."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}


def check_storage(url: str) -> None:
    """Refuse unsupported schemes and unreachable databases within ~10 s; never prints the password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("storage", mask(url), f"not a database URL; supported schemes: {', '.join(SUPPORTED_SCHEMES)}") from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise ConfigError("storage", mask(url), f"unsupported scheme {parsed.drivername!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")
    if parsed.drivername == "sqlite":
        check_sqlite_file("storage", url, "Optuna storage")
    else:
        check_database_reachable("storage", url)
    check_not_foreign("storage", url, "optuna")


def check_not_foreign(field: str, url: str, kind: str) -> None:
    """``kind`` ("optuna" or "mlflow") is what the database at ``url`` is about to be opened as; one that already
    holds the other's alembic-managed tables is refused before either writes to it. Opened as the Optuna storage, an
    MLflow store got Optuna's tables and then Optuna's schema-check traceback; opened as the MLflow store, an Optuna
    storage gave alembic's "Can't locate revision" traceback."""
    import sqlalchemy

    path = sqlite_file(url)
    if (path is None and not on_database_server(url)) or (path is not None and not path.exists()):
        return  # not a database (http, :memory:), or a store not created yet
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as con:
            tables = set(sqlalchemy.inspect(con).get_table_names())
    except Exception:  # unreadable here: the store's own opening says why
        return
    finally:
        engine.dispose()
    mine, theirs = ("studies", {"experiments", "runs"}) if kind == "optuna" else ("experiments", {"studies", "trials"})
    if "alembic_version" not in tables or mine in tables:
        return
    named = "an MLflow tracking store" if kind == "optuna" else "an Optuna storage"
    other = named if theirs <= tables else "another application's tables"
    store = "the Optuna storage" if kind == "optuna" else "the MLflow tracking store"
    default = "sqlite:///mlruns/optuna.db or .../optuna" if kind == "optuna" else "sqlite:///mlruns/mlflow.db or .../mlflow"
    raise ConfigError(
        field, mask(url), f"holds {other}, not {store}; give it a database of its own, e.g. {default}; nothing was written to it"
    )


def check_database_reachable(field: str, url: str) -> None:
    """A database server (PostgreSQL, MySQL, ...) accepts a connection within ~10 s: the Optuna storage, or an MLflow
    tracking store given as a database URL (MLflow's own store would retry a dead server for minutes)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    except Exception as exc:  # e.g. the dialect's driver is not installed
        raise ConfigError(field, mask(url), f"cannot open it: {mask(str(exc).strip().splitlines()[0])}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigError(field, mask(url), f"cannot connect to {parsed.host}:{parsed.port or 5432}: {mask(first)}") from None
    finally:
        engine.dispose()


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_folder(field: str, folder: Path, what: str) -> None:
    """The folder exists and is writable, or its nearest existing ancestor is (so it can be created). Beyond the
    permission bits (which root passes everywhere), a folder is created and removed there: /proc, a full or
    foreign file system refuse that, and otherwise the command would train first and fail at the write."""
    import tempfile

    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
    if not existing.is_dir():
        raise ConfigError(field, str(folder), f"cannot write {what} there: {existing} is a file, not a folder; point it elsewhere")
    if not os.access(existing, os.W_OK):
        raise ConfigError(
            field,
            str(folder),
            f"cannot write {what} there: {existing} is not writable (read-only file system or "
            "permissions); run from a writable folder or point it elsewhere",
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(
            field, str(folder), f"cannot write {what} there: creating a folder in {existing} failed ({exc.strerror}); point it elsewhere"
        ) from None


def check_report_folder(field: str, out_root: Path, experiment: str) -> None:
    """Before any training: the report can be written to <out_root>/<experiment>/ (``report.build.write_report``)."""
    check_folder(field, out_root, "the report")
    final = out_root / experiment
    if final.exists() and not final.is_dir():
        raise ConfigError(
            field, str(out_root), f"cannot write the report there: {final} is a file, not a folder; move it or point it elsewhere"
        )


def _unreadable_schema(path: Path) -> str | None:
    """What SQLite says when a file with SQLite's header cannot be read as a database (e.g. truncated or
    overwritten), read-only; None when its schema reads, or when it is only busy (another writer holds it)."""
    import sqlite3

    try:
        with open(path, "rb") as f:
            header, size = f.read(100), os.fstat(f.fileno()).st_size
    except OSError:
        return None
    # the header's page count is valid when its "version-valid-for" (offset 92) equals the change counter (24)
    page_size = int.from_bytes(header[16:18], "big") if len(header) == 100 else 0
    pages = int.from_bytes(header[28:32], "big") if len(header) == 100 and header[24:28] == header[92:96] else 0
    expected = (65536 if page_size == 1 else page_size) * pages
    # with a non-empty log or journal beside it, a file shorter than its header says may be mid-checkpoint or
    # awaiting its rollback, which SQLite completes on open: not damage
    pending = any(Path(f"{path}{suffix}").exists() and Path(f"{path}{suffix}").stat().st_size for suffix in ("-wal", "-journal"))
    if size < expected and not pending:
        return f"truncated: {size} of its {expected} bytes"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # locked or busy: not damage; the store's own open reports what persists
        return None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return str(exc)
    return None


def check_sqlite_file(field: str, url: str, what: str) -> None:
    """A local SQLite store must be a SQLite file (or not exist yet) in a folder we can write; otherwise one
    line naming the file, what is wrong and what to do. The file itself is never touched here."""
    path = sqlite_file(url)
    if path is None:
        return
    check_folder(field, path.parent, what)
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigError(field, str(path), f"cannot read {what}: {exc.strerror}") from None
    damage = "not a SQLite database" if head and head != SQLITE_MAGIC else _unreadable_schema(path) if head else None
    if damage:
        raise ConfigError(
            field,
            str(path),
            f"is not a valid {what} ({damage}); the file was left untouched: "
            "move it away to start a new store, or restore it from a backup",
        )
    if not os.access(path, os.W_OK):
        raise ConfigError(field, str(path), f"{what} is not writable (read-only file system or permissions)")


def check_tracking(cfg: DictConfig) -> None:
    """Before anything is written: the tracking store is usable. Server mode: the server answers and accepts the
    credentials (one line, exit 2). Local mode: a SQLite file store is valid and writable (exit 2); an http(s)
    URI (e.g. $MLFLOW_TRACKING_URI) answers within ~10 s, else TrackingUnavailable (exit 3)."""
    uri = tracking_uri(cfg)
    field = "MLFLOW_TRACKING_URI" if not cfg.tracking.uri and os.environ.get("MLFLOW_TRACKING_URI") else "tracking.uri"
    check_tracking_scheme(field, uri)
    root = cfg.tracking.artifact_root
    if root and uri.startswith(("http://", "https://")) and not is_uri(root):
        raise ConfigError(  # the server's experiments would point at this machine's disk, unreadable to everyone else
            "tracking.artifact_root",
            root,
            "a local folder cannot be a tracking server's artifact root: leave it unset (the server's own "
            "--artifacts-destination) or give a URI every client reaches (s3://...)",
        )
    if cfg.tracking.mode == "server":
        check_tracking_server(cfg)
        return
    if uri.startswith(("http://", "https://")):
        check_reachable(uri, "nothing was trained. Start it, or unset MLFLOW_TRACKING_URI to use the local store under mlruns/")
        return
    if on_database_server(uri):
        check_database_reachable(field, uri)
    if uri.lower().startswith("databricks"):
        check_databricks_credentials(field, uri)
    check_sqlite_file(field, uri, "MLflow tracking store")
    check_not_foreign(field, uri, "mlflow")
    artifacts = cfg.tracking.artifact_root or str(artifacts_beside(uri))
    if not is_uri(artifacts):  # a local folder (remote artifact stores are checked by MLflow itself)
        check_folder("tracking.artifact_root", Path(artifacts), "MLflow artifacts")


def check_databricks_credentials(field: str, uri: str) -> None:
    """``databricks`` needs credentials (a profile or DATABRICKS_HOST/TOKEN); without them MLflow raises from its first
    request, as a traceback. Reading them is local (no request is made). Skipped if MLflow moved the helper."""
    try:
        from mlflow.utils.databricks_utils import get_databricks_host_creds
    except ImportError:
        return
    import logging

    quiet = logging.getLogger("mlflow.utils.databricks_utils")  # its warning would be a second line before ours
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        get_databricks_host_creds(uri)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0].split(". Please", 1)[0]
        raise ConfigError(field, mask(uri), f"{first}: configure Databricks authentication, or use the local store (unset it)") from None
    finally:
        quiet.setLevel(level)


def check_reachable(uri: str, advice: str) -> None:
    """An http(s) tracking server answers /health within ~10 s, else TrackingUnavailable (exit 3): MLflow's own
    client would retry a dead server for minutes."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=(5, 10))
    except requests.RequestException as exc:
        raise TrackingUnavailable(f"MLflow tracking server {mask(uri)} is unreachable ({type(exc).__name__}); {advice}") from None


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # tracking stores on a database server (check_database_reachable)


def check_tracking_scheme(field_name: str, uri: str) -> None:
    """A tracking URI MLflow 3 opens (exit 2 before anything is written, not MLflow's traceback): a database URL
    (``sqlite``, ``postgresql``, ``mysql``, ``mssql``, with an optional ``+driver``), an ``http(s)`` server or
    ``databricks``. The file store (``./mlruns``, ``file:``) only with ``MLFLOW_ALLOW_FILE_STORE=true``: MLflow 3
    keeps it in maintenance mode and refuses it otherwise."""
    if "://" in uri:
        scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    else:  # a plain folder is MLflow's file store; "databricks" alone is Databricks' default profile
        scheme = "databricks" if uri.lower() == "databricks" else "file"
    if scheme == "file":
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1"):
            return
        raise ConfigError(
            field_name,
            mask(uri),
            "MLflow 3 refuses its file store (maintenance mode): use a database such as sqlite:///mlruns/mlflow.db "
            "(the default) or an http(s):// server; `mlflow migrate-filestore` moves an old store; "
            "MLFLOW_ALLOW_FILE_STORE=true keeps the file store",
        )
    if scheme not in TRACKING_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in TRACKING_SCHEMES)
        why = f"unsupported scheme {scheme!r}; supported: {allowed} (a file store only with MLFLOW_ALLOW_FILE_STORE=true)"
        raise ConfigError(field_name, mask(uri), why)


def check_tracking_server(cfg: DictConfig) -> None:
    """Server mode: the MLflow server answers within 10 s and accepts the credentials (nothing written)."""
    if cfg.tracking.mode != "server":
        return
    uri = tracking_uri(cfg)
    if os.environ.get("MLFLOW_TRACKING_USERNAME") is None:
        _required_env("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_USERNAME")
    _required_env("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD")
    check_server(uri)


def check_server(uri: str) -> None:
    """An http(s) tracking URI must answer /health within 10 s and accept $MLFLOW_TRACKING_USERNAME/PASSWORD."""
    from urllib.parse import urlparse

    import requests

    if not uri.startswith(("http://", "https://")):
        return
    host = urlparse(uri).hostname
    base = uri.rstrip("/")
    try:
        requests.get(f"{base}/health", timeout=5)
    except requests.RequestException as exc:
        raise ConfigError("tracking.uri", mask(uri), f"MLflow server at {host} does not answer ({type(exc).__name__})") from None
    auth = (os.environ.get("MLFLOW_TRACKING_USERNAME", ""), os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    try:
        resp = requests.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=auth, timeout=5)
    except requests.RequestException as exc:
        raise ConfigError("tracking.uri", mask(uri), f"MLflow server at {host} does not answer ({type(exc).__name__})") from None
    if resp.status_code in (401, 403):
        raise ConfigError(
            "MLFLOW_TRACKING_PASSWORD",
            "***",
            f"the MLflow server at {host} rejected user {auth[0]!r} "
            f"(HTTP {resp.status_code}); check MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
        )


# --- Optuna storage -------------------------------------------------------------------------------
def make_storage(url: str, heartbeat_interval: int, grace_period: int, stale_trial_callback: Callable[..., None] | None = None):
    """Optuna's RDB storage with heartbeats. Workers that start together on an empty database race to
    create its tables (the loser gets a unique-violation error), so creation is retried a few times."""
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import SQLAlchemyError

    ensure_sqlite_dir(url)
    for attempt in range(5):
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
            use_wal(url)  # Optuna's heartbeat thread and `optuna` CLI readers vs this process's writes
            return storage
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")
