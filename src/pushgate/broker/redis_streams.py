"""A stream in Redis: the Lua scripts that publish in it and read its history, for
the Redis brokers (redis.py; redis_cluster.py on a Redis Cluster) and for presence in
Redis (redis_presence.py, whose scripts publish their events in a room's stream).

A push is published by one Lua script (:data:`PUBLISH`) that, atomically, takes the
stream's next ``seq`` from its metadata hash (``<prefix>meta:{<topic>}``: epoch ``e``
and last seq ``s``, a new epoch when the hash is gone), splices the position into
the message, appends it to the stream's history and publishes it. So a push is in
history if and only if it was published. The history is a Redis list,
``<prefix>hist:{<topic>}``, of ``"<seq> <ms> <message>"`` (``ms``: the server's
clock when it was published), capped at ``history_size``; a push older than
``history_ttl`` is trimmed by the next publish and never read, and the whole list
expires ``history_ttl`` after its last push. A list, not a Redis stream: a stream
preallocates 4 KB for its first entries, which made every room pushed to once cost
about 4.7 KB; the list costs about 0.3 KB (docs/operations.md).

The metadata must outlive the history (losing it deletes the history) and any
session that may still resume from a position in it (the resume would see a new
epoch, and report lost pushes that were not). So it expires ``max(history_ttl,
session_ttl) + POSITION_MARGIN`` (redis.py) after the stream's last publish or read,
and every node refreshes it, every ``POSITION_MARGIN / 3``, for the streams it
follows (:meth:`~pushgate.broker.redis.RedisBroker._refresh_followed`): a position
may be older than any publish (a quiet room whose members stay connected for hours).
A session whose node left the stream, or died, resumes within ``session_ttl`` of that
node's last refresh, well within the lifetime. Once no node follows a stream and it
was idle that long, it starts over in a new epoch; only sessions that expired held a
position in it.
"""

from pushgate.streams import Publication

# Take a stream's metadata (KEYS[1]), making it in epoch ARGV[1] if it is gone (a
# stream never used, idle past its lifetime ARGV[2] ms, or a Redis that restarted
# empty): then any history left over (KEYS[2]) is of a lost epoch, and goes. `now`
# is the server's clock in ms (TIME in a script that writes: Redis >= 5 replicates
# a script's effects, not the script); published(entry), a history entry's.
ENSURE_META = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function published(entry)
  return tonumber(string.match(entry, '^%d+ (%d+) '))
end
"""

# After ENSURE_META, a Lua function for every script that publishes in the stream
# (PUBLISH, and broker/redis_presence_scripts.py's): publish(msg, channel, size, keep,
# accepted, command) publishes ``msg`` on ``channel`` at the stream's next position,
# kept in history (``size`` entries at most, for ``keep`` ms); ``accepted`` is when it
# was accepted (wall clock, for the delivery-latency metric); ``command`` is PUBLISH,
# or SPUBLISH on a Redis Cluster. Returns its seq.
PUBLISH_FUNCTION = """
local function publish(msg, channel, size, keep, accepted, command)
  local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
  local data = string.sub(msg, 1, -3) .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}\\n'
  redis.call('RPUSH', KEYS[2], seq .. ' ' .. now .. ' ' .. data)
  redis.call('LTRIM', KEYS[2], -tonumber(size), -1)
  local oldest = now - tonumber(keep)
  while published(redis.call('LINDEX', KEYS[2], 0)) <= oldest do
    redis.call('LPOP', KEYS[2])
  end
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call(command, channel, seq .. ' ' .. epoch .. ' ' .. accepted .. ' ' .. data)
  return seq
end
"""

# Publish ARGV[3] on channel ARGV[4] at the stream's next position, kept in history
# (ARGV[5] entries at most, for ARGV[6] ms); ARGV[7] is when it was accepted; ARGV[8]
# is PUBLISH, or SPUBLISH on a Redis Cluster. Returns {seq, epoch}.
PUBLISH = (
    ENSURE_META
    + PUBLISH_FUNCTION
    + """
return {publish(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]), epoch}
"""
)

# The stream's position, and its history younger than ARGV[5] ms after seq ARGV[4]
# if ARGV[3] is its epoch (all of it otherwise; ARGV[4] = -1: none). Returns
# {epoch, seq, {"<seq> <ms> <data>"...}}.
HISTORY = (
    ENSURE_META
    + """
local seq = tonumber(redis.call('HGET', KEYS[1], 's'))
local since = tonumber(ARGV[4])
local entries = {}
if since >= 0 and (ARGV[3] ~= epoch or since < seq) then
  local first, after = 0, -1
  if ARGV[3] == epoch then first, after = since - seq, since end
  local oldest = now - tonumber(ARGV[5])
  for _, entry in ipairs(redis.call('LRANGE', KEYS[2], first, -1)) do
    if published(entry) > oldest and tonumber(string.match(entry, '^%d+')) > after then
      entries[#entries + 1] = entry
    end
  end
end
return {epoch, seq, entries}
"""
)


def read_entry(entry: bytes, epoch: str) -> Publication:
    """A push read from history: ``b"<seq> <ms> <data>"``."""
    seq, _published, data = entry.split(b" ", 2)
    return Publication(int(seq), epoch, data)
