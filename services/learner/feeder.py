"""Feeding: the learner's data, its position, and the tasks it issues inside the staleness window.

Everything a task contains is a pure function of (seed, data position, step, version), so a
restarted learner issues the same task for the same position. The position and the number of tasks
issued are written to Redis in the same transaction as each task: a learner resumed from an older
checkpoint continues after the last task it actually issued instead of issuing it twice.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from services.learner.algorithm import AlgorithmSettings
from services.learner.consumed import ConsumedIds
from shared.api.reward import DEFAULT_VERIFIER
from shared.api.rollout import SamplingParams
from shared.bus import FeederState, TaskStream
from shared.messages import RolloutTask
from shared.modeling import prompt_token_ids, response_token_ids
from shared.prefix import PrefixSchedule
from shared.problems import Problem

log = logging.getLogger(__name__)


def keeps_demonstration(problem_id: str, fraction: float, seed: int) -> bool:
    """Deterministic per prompt: the same prompts keep their demonstrations in every run with ``seed``."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"{seed}:demo:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


class DataOrder:
    """Problems in a seeded order that is reshuffled every epoch; ``at(position)`` is pure."""

    def __init__(self, problems: Sequence[Problem], seed: int):
        if not problems:
            raise ValueError("the learner's data set is empty")
        self.problems = list(problems)
        self.seed = seed
        self._epoch = -1
        self._order: list[int] = []

    def at(self, position: int) -> Problem:
        epoch, offset = divmod(position, len(self.problems))
        if epoch != self._epoch:
            self._order = list(range(len(self.problems)))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self.problems[self._order[offset]]


@dataclass
class TaskFactory:
    """Turns a problem into the task of one prompt group (prefix cuts from the shared schedule)."""

    tokenizer: object
    algorithm: AlgorithmSettings
    sampling: SamplingParams
    seed: int

    @property
    def schedule(self) -> PrefixSchedule:
        return self.algorithm.schedule

    def demonstration(self, problem: Problem) -> tuple[str, list[int]] | None:
        """The demonstration this run may use for ``problem`` (text, token ids), or None."""
        if not problem.demonstrations:
            return None
        if not keeps_demonstration(problem.id, self.algorithm.demo_fraction, self.seed):
            return None
        text = problem.demonstrations[0]
        ids = response_token_ids(self.tokenizer, text)
        return (text, ids) if len(ids) >= 2 else None

    def make(self, task_id: str, problem: Problem, position: int, step: int, version: int) -> RolloutTask:
        algo = self.algorithm
        demo = self.demonstration(problem)
        hybrid_prefixes: list[list[int]] = []
        demonstrations: list[list[int]] = []
        demonstration_texts: list[str] = []
        n_on_policy = algo.n_rollouts
        if demo is not None and (algo.n_hybrid or algo.n_demonstration):
            text, ids = demo
            rng = random.Random(f"{self.seed}:prefix:{position}")
            for _ in range(algo.n_hybrid):
                _, cut = self.schedule.sample_cut(step, len(ids), rng)
                hybrid_prefixes += [ids[:cut]] * algo.continuations_per_prefix
            demonstrations = [ids] * algo.n_demonstration
            demonstration_texts = [text] * algo.n_demonstration
            n_on_policy = algo.n_on_policy
        return RolloutTask(
            id=task_id,
            prompt_id=problem.id,
            issued_at_version=version,
            step=step,
            prompt_token_ids=prompt_token_ids(self.tokenizer, problem.messages()),
            reference=problem.answer,
            verifier=problem.verifier or DEFAULT_VERIFIER,
            n_on_policy=n_on_policy,
            hybrid_prefixes=hybrid_prefixes,
            demonstrations=demonstrations,
            demonstration_texts=demonstration_texts,
            sampling=self.sampling,
        )


class Feeder:
    """Appends tasks to the tasks stream inside the staleness window; draws SFT examples."""

    def __init__(
        self,
        tasks: TaskStream,
        run_id: str,
        order: DataOrder,
        factory: TaskFactory,
        window: int,
        batch_prompts: int,
        state: FeederState | None = None,
    ):
        self.tasks = tasks
        self.run_id = run_id
        self.order = order
        self.factory = factory
        self.window = window
        self.batch_prompts = batch_prompts
        self.state = state or FeederState()
        # Own tasks a worker moved to the dead letters: they never produce a group, so each gives its
        # place in the window back (else enough of them would stall the learner for good).
        self.dead_ids: set[str] = set()
        self._dead_cursor: str | None = None  # the last dead letter taken in

    def task_prefix(self) -> str:
        return f"{self.run_id}-"

    def owns(self, group_id: str) -> bool:
        return group_id.startswith(self.task_prefix())

    def catch_up(self) -> None:
        """After a restore: continue after tasks issued since the checkpoint (they are still queued)."""
        stored = self.tasks.feeder_state(self.run_id)
        if stored is not None:
            position, issued = stored.position, stored.issued
            if issued > self.state.issued:
                log.info("%d tasks were issued after the checkpoint; continuing after them", issued - self.state.issued)
            self.state.position = max(self.state.position, position)
            self.state.issued = max(self.state.issued, issued)

    def outstanding(self, consumed_ids: ConsumedIds) -> int:
        """Tasks issued whose group is neither consumed (trained or dropped) nor never coming (dead letter)."""
        return self.state.issued - len(consumed_ids) - sum(1 for i in self.dead_ids if i not in consumed_ids)

    def read_dead_letters(self) -> int:
        """Take in the dead letters appended since the last call; returns how many were this run's."""
        new = 0
        for letter in self.tasks.read_dead_letters(after=self._dead_cursor):
            self._dead_cursor = letter.entry_id
            if letter.task is None:
                continue  # not a task (kept there for inspection): no place in the window to give back
            task_id = letter.task.id
            if self.owns(task_id) and task_id not in self.dead_ids:
                self.dead_ids.add(task_id)
                new += 1
                log.warning("task %s is in the dead letters: its place in the window is given back", task_id)
        return new

    def fill(self, step: int, version: int, consumed_ids: ConsumedIds) -> int:
        """Issue tasks while fewer than ``window`` issued groups are outstanding; returns how many were issued."""
        self.read_dead_letters()
        for task_id in self.dead_ids:
            consumed_ids.dead(task_id)
        issued = 0
        while (outstanding := self.outstanding(consumed_ids)) < self.window:
            # The task will be trained about this many steps ahead (FIFO), so cut with that step's schedule.
            target_step = step + outstanding // self.batch_prompts
            position = self.state.position
            problem = self.order.at(position)
            # Numbered by issue, not by data position (SFT steps draw positions that issue no task): the
            # numbers have no gaps, which the consumed-ids watermark relies on (services/learner/consumed.py).
            task_id = f"{self.task_prefix()}{self.state.issued:08d}"
            task = self.factory.make(task_id, problem, position, target_step, version)
            self.tasks.issue(task, self.run_id, FeederState(position=position + 1, issued=self.state.issued + 1))
            self.state.position += 1
            self.state.issued += 1
            issued += 1
        return issued

    def draw_demonstrations(self, n: int) -> list[tuple[Problem, list[int]]]:
        """The next ``n`` problems that have a demonstration (SFT steps), with its token ids."""
        out: list[tuple[Problem, list[int]]] = []
        scanned = 0
        while len(out) < n:
            problem = self.order.at(self.state.position)
            self.state.position += 1
            scanned += 1
            demo = self.factory.demonstration(problem)
            if demo is not None:
                out.append((problem, demo[1]))
            elif scanned > 10 * len(self.order.problems):
                raise ValueError("no problem of the data set has a demonstration this run may use")
        return out
