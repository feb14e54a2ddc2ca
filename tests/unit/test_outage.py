"""The shared outage circuit: closed, open for the retry interval, one probe at a time."""

from __future__ import annotations

import pytest

from portcullis.outage import OutageCircuit
from support.clock import ManualClock


def opened(clock: ManualClock) -> OutageCircuit:
    circuit = OutageCircuit("test", 1.0, clock=clock)
    assert not circuit.blocked()
    circuit.failed(ConnectionError("down"))
    return circuit


def test_a_failure_opens_it_for_the_retry_interval() -> None:
    clock = ManualClock()
    circuit = opened(clock)
    assert circuit.is_open
    assert circuit.opened == 1
    assert circuit.last_error == "ConnectionError: down"
    clock.advance(0.999)
    assert circuit.blocked()


def test_one_probe_at_a_time_then_success_closes_it() -> None:
    clock = ManualClock()
    circuit = opened(clock)
    clock.advance(1.0)
    assert not circuit.blocked()  # this caller is the probe
    assert circuit.blocked()  # the others wait for it
    circuit.succeeded()
    assert not circuit.is_open
    assert not circuit.blocked()
    assert circuit.recoveries == 1


def test_a_failed_probe_opens_it_for_another_interval_without_a_second_outage() -> None:
    clock = ManualClock()
    circuit = opened(clock)
    clock.advance(1.0)
    assert not circuit.blocked()
    circuit.failed(TimeoutError())
    assert circuit.opened == 1
    assert (circuit.errors, circuit.timeouts) == (2, 1)
    clock.advance(0.5)
    assert circuit.blocked()
    clock.advance(0.5)
    assert not circuit.blocked()


def test_an_abandoned_probe_frees_the_slot() -> None:
    clock = ManualClock()
    circuit = opened(clock)
    clock.advance(1.0)
    assert not circuit.blocked()
    circuit.abandoned()
    assert circuit.is_open
    assert not circuit.blocked()  # the next caller probes


def test_success_while_closed_counts_nothing() -> None:
    circuit = OutageCircuit("test", 1.0, clock=ManualClock())
    circuit.succeeded()
    assert circuit.recoveries == 0


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        OutageCircuit("test", 0.0)
