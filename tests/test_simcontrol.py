"""Simulator controls from a notebook (issue 17 point 17): documented settings and faults, and
``Session.simulator()`` talking to the real simulator over loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from simctl import SimProcess

from goenhance_nb import ConfigError
from goenhance_nb._session import Session
from goenhance_nb.sim.config import DEFAULT_CONFIG
from goenhance_nb.sim.docs import CONFIG_HELP, FAULT_HELP
from goenhance_nb.sim.faults import KINDS


def test_every_setting_and_fault_kind_is_described_in_help() -> None:
    assert set(CONFIG_HELP) == set(DEFAULT_CONFIG)
    assert set(FAULT_HELP) == set(KINDS)
    out = subprocess.run(
        [sys.executable, "-m", "goenhance_nb.sim", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for name in [*CONFIG_HELP, *FAULT_HELP]:
        assert f"\n  {name} " in out, name
    assert "goenhance_nb.simulator()" in out


def test_configure_changes_the_simulator_and_refuses_unknown_settings(
    session: Session, sim: SimProcess
) -> None:
    control = session.simulator()
    start = sim.config()
    assert control.configure(processing_seconds=7)["processing_seconds"] == 7
    assert sim.config()["processing_seconds"] == 7  # the simulator itself says so
    with pytest.raises(ConfigError, match="no_such_setting"):
        control.configure(no_such_setting=1)
    assert control.config()["processing_seconds"] == 7
    control.reset()
    assert sim.config() == start


def test_a_fault_reaches_the_next_request_and_the_log_shows_it(
    session: Session, sim: SimProcess
) -> None:
    control = session.simulator()
    control.fault("reject_generate", code=1001, msg="simulated refusal")
    assert [f["kind"] for f in control.faults()] == ["reject_generate"]
    control.clear_faults()
    assert control.faults() == []
    with pytest.raises(ConfigError, match="kind"):
        control.fault("no_such_fault")
    session.credits()
    assert any(r["path"] == "/api/v1/user/tokens" for r in control.requests())
    assert "sim-" not in repr(control) and repr(control).startswith("<SimulatorControl http://")
