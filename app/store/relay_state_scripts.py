"""The Lua scripts behind `relay_state.py` (Redis runs each atomically). Keys are as that
module's docstring lists them."""

from __future__ import annotations

from typing import Final

# One call saves every dirty session of a turn. ARGV: owner, ttl ms, max messages per list, key
# prefix, then per session: its id, its core flag ("1": the next argument is the core's state;
# "0": unchanged, the next argument is empty), its number of endpoints, then per endpoint a header
# "name client_seq acked first count live" followed by `count` messages (seq first, first + 1, ...).
# The reply has one character per session: "1" saved; "0" the lease belongs to another instance
# (nothing of that session written); "r" the delta does not continue what is stored (nothing of it
# written; send a full one: every kept message and the core's state). The session's keys are
# derived from its id (one Redis node: a Cluster would refuse undeclared keys).
SAVE: Final = """
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local prefix = ARGV[4]
local out = {}
local a = 6
for s = 1, tonumber(ARGV[5]) do
  local sid = ARGV[a]
  local core_flag, core = ARGV[a + 1], ARGV[a + 2]
  local eps = tonumber(ARGV[a + 3])
  a = a + 4
  local lease = prefix .. 'relay:lease:' .. sid
  local state = prefix .. 'relay:state:' .. sid
  local owner = redis.call('GET', lease)
  local verdict = '1'
  if owner and owner ~= me then verdict = '0' end
  -- check every endpoint's continuity before writing anything of this session
  local plan = {}
  local b = a
  local fresh = false
  for e = 1, eps do
    local name, cseq, acked, first, count, live =
      string.match(ARGV[b], '^(%S+) (%d+) (%d+) (%d+) (%d+) ([01])$')
    acked, first, count = tonumber(acked), tonumber(first), tonumber(count)
    local base, last = 0, 0
    if verdict == '1' then
      local saved = redis.call('HMGET', state, name .. ':acked', name .. ':last')
      if saved[1] then base, last = tonumber(saved[1]), tonumber(saved[2])
      else fresh = true end
      if math.max(last, acked) + 1 < first then verdict = 'r' end
    end
    plan[e] = {name, cseq, acked, first, count, b + 1, base, last, live}
    b = b + 1 + count
  end
  if verdict == '1' then
    if not owner then redis.call('SET', lease, me, 'PX', ttl) end
    if core_flag == '1' then redis.call('HSET', state, 'core', core) end
    for e = 1, eps do
      local name, cseq, acked, first, count, at, base, last, live = unpack(plan[e])
      local list = prefix .. 'relay:replay:' .. sid .. ':' .. name
      if acked > base then
        if acked >= last then redis.call('DEL', list)
        else redis.call('LTRIM', list, acked - base, -1) end
        base = acked
        if last < acked then last = acked end
      end
      local skip = last + 1 - first
      if skip < count then
        local length = redis.call('RPUSH', list, unpack(ARGV, at + skip, at + count - 1))
        -- a list (re)created here has no expiry yet; the owner's touches extend it later
        if length == count - skip then redis.call('PEXPIRE', list, ttl) end
        last = first + count - 1
      end
      if last - base > cap then
        redis.call('LTRIM', list, -cap, -1)
        base = last - cap
      end
      redis.call('HSET', state, name .. ':in', cseq, name .. ':acked', base, name .. ':last', last,
                 name .. ':live', live)
    end
    if fresh or core_flag == '1' then redis.call('PEXPIRE', state, ttl) end
  end
  out[s] = verdict
  a = b
end
return table.concat(out)
"""

# KEYS: lease, state. ARGV: me, ttl ms, the heartbeat keys' prefix, the endpoint asking. Returns
# {1, previous owner or ''} when the session is now ours, {0, owner} when a live, serving
# instance holds it with that endpoint connected there. (An endpoint that reaches this instance
# while its session runs elsewhere without it was routed here: the proxy's ring changed, an
# instance came back. The session follows it, so that sessions converge on the instance their
# sockets are routed to; the owner learns it lost the lease at its next save.)
CLAIM: Final = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, owner}
end
if owner then
  local beat = redis.call('GET', ARGV[3] .. owner)
  if beat == 'serving' and redis.call('HGET', KEYS[2], ARGV[4] .. ':live') == '1' then
    return {0, owner}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, owner or ''}
"""

# KEYS: lease, then the keys to delete with it. ARGV: me. Deletes only while the lease is ours.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
"""

# KEYS: lease and the session's other keys. ARGV: me, ttl ms. Extends them while the lease is ours.
TOUCH: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
"""
