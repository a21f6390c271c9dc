"""The parts of one running sandbox, built once per process and shared by its views."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from sandbox.courier import Courier
from sandbox.faults import FaultBoard
from sandbox.objects import ObjectStore
from sandbox.operation import Operation
from sandbox.options import Config
from sandbox.stats import Stats

EXTENSION = "sandbox"


@dataclass(frozen=True)
class Simulator:
    config: Config
    store: ObjectStore
    operation: Operation
    faults: FaultBoard
    stats: Stats
    courier: Courier

    @classmethod
    def build(cls, config: Config) -> Simulator:
        store = ObjectStore(config.auth_id)
        stats = Stats()
        return cls(config, store, Operation(store, config.auth_id), FaultBoard(), stats, Courier(config, stats))


def current_simulator() -> Simulator:
    return current_app.extensions[EXTENSION]
