"""The trajectories stream: rollout workers append each task's group once, the learner's group reads,
acknowledges (after the checkpoint that records its decision) and reports pending and backlog."""

from __future__ import annotations

import redis

from shared.bus.codec import encode
from shared.bus.keys import TRAJECTORIES_GROUP, Keys
from shared.bus.stream import MessageStream
from shared.messages import TrajectoryGroup

# SADD and XADD in one step: a group is appended once, whichever worker finishes the task first,
# even when a task was reclaimed from a worker that was only slow and both finish it.
_APPEND_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"""


class TrajectoryStream(MessageStream[TrajectoryGroup]):
    def __init__(self, client: redis.Redis, keys: Keys):
        super().__init__(client, keys.trajectories, TRAJECTORIES_GROUP, TrajectoryGroup)
        self.keys = keys
        self._append_once = client.register_script(_APPEND_ONCE)

    def append_once(self, group: TrajectoryGroup) -> bool:
        """Append ``group`` unless a group with its id was appended before; True if appended now."""
        fields = [part for pair in encode(group).items() for part in pair]
        return bool(self._append_once(keys=[self.keys.produced, self.stream], args=[group.id, *fields]))

    def already_produced(self, group_id: str) -> bool:
        return bool(self.client.sismember(self.keys.produced, group_id))

    def produced_count(self) -> int:
        return int(self.client.scard(self.keys.produced))
