"""The trajectories stream: rollout workers append each task's group once, the learner's group reads,
acknowledges (after the checkpoint that records its decision) and reports pending and backlog.

Append-once stays bounded: a group's id is remembered in a sorted set scored by its task's entry time
in the tasks stream, and only until the tasks stream's low water (every task below it acknowledged)
passes it; below that watermark a late append is refused without looking the id up.
"""

from __future__ import annotations

import redis

from shared.bus.codec import encode
from shared.bus.keys import TRAJECTORIES_GROUP, Keys
from shared.bus.stream import MessageStream, entry_ms
from shared.messages import TrajectoryGroup

# Watermark check, ZADD NX and XADD in one step: a group is appended once, whichever worker finishes the
# task first, even when a task was reclaimed from a worker that was only slow and both finish it.
_APPEND_ONCE = """
local watermark = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) < watermark then
  return 0
end
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 3))
return 1
"""

# The watermark only rises; the ids below it are forgotten in the same step.
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local proposed = tonumber(ARGV[1])
if proposed <= current then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
"""


class TrajectoryStream(MessageStream[TrajectoryGroup]):
    def __init__(self, client: redis.Redis, keys: Keys):
        super().__init__(client, keys.trajectories, TRAJECTORIES_GROUP, TrajectoryGroup)
        self.keys = keys
        self._append_once = client.register_script(_APPEND_ONCE)
        self._advance = client.register_script(_ADVANCE)

    def append_once(self, group: TrajectoryGroup, task_entry_id: str) -> bool:
        """Append ``group`` (made for the task at ``task_entry_id`` of the tasks stream) unless a group with
        its id was appended before or its task is below the watermark; True if appended now."""
        fields = [part for pair in encode(group).items() for part in pair]
        keys = [self.keys.produced_recent, self.keys.produced_watermark, self.stream]
        return bool(self._append_once(keys=keys, args=[group.id, entry_ms(task_entry_id), *fields]))

    def already_produced(self, group_id: str, task_entry_id: str) -> bool:
        """True if the group was appended, or its task is settled (below the watermark)."""
        if entry_ms(task_entry_id) < self.watermark():
            return True
        return self.client.zscore(self.keys.produced_recent, group_id) is not None

    def watermark(self) -> int:
        return int(self.client.get(self.keys.produced_watermark) or 0)

    def advance_watermark(self, tasks_low_water: str) -> int:
        """Raise the watermark to the millisecond of the tasks stream's low water (every task entry below it
        is acknowledged); returns how many remembered ids it let go."""
        keys = [self.keys.produced_recent, self.keys.produced_watermark]
        return int(self._advance(keys=keys, args=[entry_ms(tasks_low_water)]))

    def recent_count(self) -> int:
        """Ids remembered above the watermark."""
        return int(self.client.zcard(self.keys.produced_recent))
