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


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server stopped answering: the worker stops (its trial is re-queued), exit 3."""
