"""The Lua scripts of presence in Redis (redis_presence.py, whose docstring has the
keys they keep and what they decide): a prelude that publishes in the room's stream
with history (redis_streams.py's) or without, what every operation shares (an entry
taken out, the due ones swept, the room's keys' lifetime), and one script per
operation, each run on the room's slot.
"""

from pushgate.broker.redis_streams import ENSURE_META, PUBLISH_FUNCTION

# Every script's KEYS: the stream's meta and history, then the room's three presence
# keys. ARGV[1..2] are ENSURE_META's (a new epoch, the meta's lifetime in ms);
# ARGV[3..7] how an event is published: channel, history size, history TTL in ms,
# when it was accepted, PUBLISH or SPUBLISH; ARGV[8] how long the presence keys
# outlive their last deadline (ms); ARGV[9] "1" when the room announces its changes
# (publishes them in its stream: a presence room), else "0" (a room kept for webhooks
# only). Each operation's own arguments follow; each returns the changes it made.
WITH_HISTORY = (
    ENSURE_META
    + PUBLISH_FUNCTION
    + """
local history = true
local function emit(msg)
  if ARGV[9] == '1' then publish(msg, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]) end
end
"""
)

WITHOUT_HISTORY = """
local history = false
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function emit(msg)
  if ARGV[9] == '1' then redis.call(ARGV[7], ARGV[3], '0 - ' .. ARGV[6] .. ' ' .. msg) end
end
"""

COMMON = """
local entries, users, deadlines = KEYS[3], KEYS[4], KEYS[5]
-- The changes made, returned to the caller: {joined 1/0, user key, info, edge 1/0}
-- (edge: the room's first user came, or its last went).
local changes = {}
local function changed(joined, key, info)
  local edge = redis.call('HLEN', users) == (joined == 1 and 2 or 1)
  changes[#changes + 1] = {joined, key, info, edge and 1 or 0}
end

-- Take conn's entry out: its user's leave, if it was the user's last.
local function remove(conn)
  redis.call('ZREM', deadlines, conn)
  local packed = redis.call('HGET', entries, conn)
  if not packed then return end
  redis.call('HDEL', entries, conn)
  local key = cmsgpack.unpack(packed)[2]
  local had = redis.call('HGET', users, key)
  if not had then return end
  local user = cmsgpack.unpack(had)
  if user[1] > 1 then
    user[1] = user[1] - 1
    redis.call('HSET', users, key, cmsgpack.pack(user))
  else
    redis.call('HDEL', users, key)
    emit(user[4])
    changed(0, key, user[3])
  end
end

-- Take out the entries past their deadline, in the order they entered.
local function sweep()
  local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now)
  if #due == 0 then return end
  local order = {}
  for _, conn in ipairs(due) do
    local packed = redis.call('HGET', entries, conn)
    order[conn] = packed and cmsgpack.unpack(packed)[3] or 0
  end
  table.sort(due, function(a, b) return order[a] < order[b] end)
  for _, conn in ipairs(due) do remove(conn) end
end

-- The room's keys last until its last deadline and the margin; none when it is empty
-- (then it returns true).
local function expire()
  local last = redis.call('ZRANGE', deadlines, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', entries, users, deadlines)
    return true
  end
  local ms = math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[8])
  redis.call('PEXPIRE', entries, ms)
  redis.call('PEXPIRE', users, ms)
  redis.call('PEXPIRE', deadlines, ms)
  return false
end
"""

# Entry ARGV[10] (user key ARGV[12], info ARGV[13] or "", join event ARGV[14], leave
# event ARGV[15]) held by ARGV[11] for ARGV[16] ms; due entries swept first.
ENTER = """
sweep()
local conn, holder, key = ARGV[10], ARGV[11], ARGV[12]
local packed = redis.call('HGET', entries, conn)
if packed then
  local entry = cmsgpack.unpack(packed)
  entry[1] = holder
  redis.call('HSET', entries, conn, cmsgpack.pack(entry))
else
  local order = redis.call('HINCRBY', users, '#', 1)
  redis.call('HSET', entries, conn, cmsgpack.pack({holder, key, order}))
  local had = redis.call('HGET', users, key)
  if had then
    local user = cmsgpack.unpack(had)
    user[1] = user[1] + 1
    redis.call('HSET', users, key, cmsgpack.pack(user))
  else
    redis.call('HSET', users, key, cmsgpack.pack({1, order, ARGV[13], ARGV[15]}))
    emit(ARGV[14])
    changed(1, key, ARGV[13])
  end
end
redis.call('ZADD', deadlines, now + tonumber(ARGV[16]), conn)
expire()
return changes
"""

# Entry ARGV[10] leaves.
LEAVE = """
remove(ARGV[10])
expire()
return changes
"""

# Entry ARGV[10], if holder ARGV[11] holds it, ends in ARGV[12] ms.
DETACH = """
local packed = redis.call('HGET', entries, ARGV[10])
if packed and cmsgpack.unpack(packed)[1] == ARGV[11] then
  redis.call('ZADD', deadlines, now + tonumber(ARGV[12]), ARGV[10])
  expire()
end
"""

# The entries ARGV[11], ARGV[13]... that their holders ARGV[12], ARGV[14]... still
# hold last ARGV[10] ms more (at least); then due entries are swept. Returns the
# changes, and 1 when the room is empty now.
KEEP = """
local deadline = now + tonumber(ARGV[10])
for i = 11, #ARGV - 1, 2 do
  local packed = redis.call('HGET', entries, ARGV[i])
  if packed and cmsgpack.unpack(packed)[1] == ARGV[i + 1] then
    local current = redis.call('ZSCORE', deadlines, ARGV[i])
    if not current or tonumber(current) < deadline then
      redis.call('ZADD', deadlines, deadline, ARGV[i])
    end
  end
end
sweep()
local empty = expire()
return {changes, empty and 1 or 0}
"""

# The entries before their deadline {wsId, user key, order...}, their users {user
# key, order, info...}, and the stream's position (epoch "" without history).
ROSTER = """
local found, people, seen = {}, {}, {}
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '(' .. now, '+inf')) do
  local packed = redis.call('HGET', entries, conn)
  if packed then
    local entry = cmsgpack.unpack(packed)
    local key = entry[2]
    found[#found + 1] = conn
    found[#found + 1] = key
    found[#found + 1] = entry[3]
    if not seen[key] then
      seen[key] = true
      local had = redis.call('HGET', users, key)
      if had then
        local user = cmsgpack.unpack(had)
        people[#people + 1] = key
        people[#people + 1] = user[2]
        people[#people + 1] = user[3]
      end
    end
  end
end
if history then
  return {epoch, tonumber(redis.call('HGET', KEYS[1], 's')), found, people}
end
return {'', 0, found, people}
"""
