"""The job's Redis bus: the only code that sends commands to Redis.

Each structure has one owner class: the tasks stream (:class:`TaskStream`), the trajectories stream
(:class:`TrajectoryStream`), the weights record (:class:`WeightsRecordStore`), the worker registry
(:class:`WorkerRegistry`) and the ledger's read-only view (:class:`LedgerQueries`); :class:`Keys` names
every key of a job. Entries go through one codec (:mod:`shared.bus.codec`).
"""

from shared.bus.codec import CodecError
from shared.bus.connection import RECONNECT_RETRIES, Redis, RedisError, Unreachable, connect
from shared.bus.footprint import Footprint, footprint
from shared.bus.keys import TASKS_GROUP, TRAJECTORIES_GROUP, Keys
from shared.bus.ledger import LedgerQueries
from shared.bus.registry import WorkerRegistry
from shared.bus.retention import TrimReport, trim_consumed
from shared.bus.stream import Entry, MessageStream, PendingEntry
from shared.bus.tasks import DeadLetter, FeederState, TaskStream
from shared.bus.trajectories import TrajectoryStream
from shared.bus.weights import WeightsRecordStore

__all__ = [
    "RECONNECT_RETRIES",
    "TASKS_GROUP",
    "TRAJECTORIES_GROUP",
    "CodecError",
    "DeadLetter",
    "Entry",
    "Footprint",
    "FeederState",
    "Keys",
    "LedgerQueries",
    "MessageStream",
    "PendingEntry",
    "Redis",
    "RedisError",
    "TaskStream",
    "TrajectoryStream",
    "TrimReport",
    "Unreachable",
    "WeightsRecordStore",
    "WorkerRegistry",
    "connect",
    "footprint",
    "trim_consumed",
]
