"""GPU workers without a GPU: the assignment logic with fake device counts (benchmarks/gpu_check.sh runs it on a
real GPU machine)."""

from __future__ import annotations

import pytest

from sweeper import config
from sweeper.worker import plan_workers


@pytest.mark.parametrize(
    "workers,gpus,plan",
    [
        ("auto", 0, [None]),  # a CPU machine: one worker
        ("auto", 1, ["0"]),
        ("auto", 4, ["0", "1", "2", "3"]),  # one worker per GPU
        (1, 0, [None]),
        (3, 0, [None, None, None]),
        (5, 2, ["0", "1", "0", "1", "0"]),  # worker i on GPU i mod G
        (2, 8, ["0", "1"]),
    ],
)
def test_workers_are_pinned_round_robin(workers, gpus, plan):
    assert plan_workers(workers, gpus) == plan


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_workers_must_be_positive_or_auto(value, capsys):
    from sweeper.__main__ import main

    assert main(["data=digits", f"workers={value}"]) == 2
    err = capsys.readouterr().err
    assert "workers:" in err and "integer > 0 or auto" in err


def test_workers_auto_is_accepted():
    assert config.load(["workers=auto"]).workers == "auto"
