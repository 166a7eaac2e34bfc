"""The exception types the entry points map to exit codes: bad input (2), a lost store (3), a failed trial."""


class ConfigError(ValueError):
    """A bad value in the configuration or input: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is invalid; {allowed}")


class TrialFailed(RuntimeError):
    """A trial that could not finish (e.g. its loss became NaN); recorded as failed, not a traceback."""


class TrialAbandoned(RuntimeError):
    """This worker no longer owns its trial (it stalled past the grace period; the trial was failed and retried
    elsewhere): stop training it, leave its run FAILED, tell Optuna nothing."""


class StoreUnavailable(RuntimeError):
    """A store (MLflow or Optuna) stopped answering or can no longer be written: the worker stops, exit 3; the
    study resumes when the command is re-run after the fix (a trial left RUNNING goes stale and is retried)."""


class TrackingUnavailable(StoreUnavailable):
    """The MLflow tracking server stopped answering, or the MLflow store cannot be written."""


LOCKED = (
    "database is locked: another process held the SQLite store's write lock past the busy timeout (Optuna 60 s, "
    "MLflow 20 s), e.g. a worker stopped or frozen in the middle of a write"
)


# what a store's error says -> the reason the one-line error gives
_WRITE_FAILURES = {
    "database is locked": LOCKED,
    "readonly database": "readonly database",
    "read-only file system": "read-only file system",
    "database or disk is full": "database or disk is full",
    "no space left on device": "no space left on device",
    "disk i/o error": "disk i/o error",
    "unable to open database file": "unable to open database file",
}


def write_failure(exc: BaseException | None) -> str | None:
    """Why a store write failed, when the disk is read-only or full, or a local SQLite store stayed locked past its
    busy timeout (any store, any layer; follows the causes)."""
    import errno

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT):
            return exc.strerror or str(exc)
        text = str(exc).lower()
        for marker, reason in _WRITE_FAILURES.items():
            if marker in text:
                return reason
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


ABANDONED = "trial taken over: this worker stalled past the grace period and the trial was retried elsewhere"
