"""The Lua scripts of `brace.redis.RedisStore`: one script call per decision.

Theory of operation
-------------------
Each script touches exactly one key (``KEYS[1]``), so it is atomic on a single server and
always lands in one slot of a Redis Cluster. `BATCH` runs several decisions in one call
(the coalesced decisions of concurrent tasks): each decision is one of the lone scripts
run on its own key, so a batch only ever holds keys of one slot on a cluster (the client
groups the calls by slot). The arguments are data, never script text:

- ``ARGV[1]``: the mode, ``hit`` (decide and write), ``peek`` (decide, write nothing) or
  ``reset`` (delete the key);
- ``ARGV[2]``: the cost;
- ``ARGV[3]``: the time in seconds, or ``""`` for the server's ``TIME`` (the normal case:
  every host shares the server's clock). A given time is for the differential tests;
  expiry still runs on the server's clock, so keys written at a given time are kept an
  hour longer to stay alive through a test;
- ``ARGV[4:]``: the policy's parameters, as Python ``repr`` of floats (exact through
  ``tonumber``).

The decision arithmetic is the Python core's (``brace._core.gcra.GCRA.decide``,
``SlidingWindowCounter.decide``, ``SlidingLogCore.try_acquire``) operation for operation:
Lua numbers are IEEE doubles like Python floats, and the integer operands (counts, costs)
are exact in both, so the same inputs give the same bits. ``int()`` is truncation toward
zero (``trunc``). The epsilons are pasted in from the Python constants. A script answers
one string ``"allowed remaining retry_after reset_after now"``: the floats in ``%.17g``,
which reads back into the same double.

State and expiry (``PX`` / ``PEXPIRE`` of ``reset_after``, rounded up to a millisecond):

- GCRA: a string, the ``tat``; a bucket at rest is not written.
- Counter: a string ``"index current previous"``; a counter at rest is not written.
- Log: a sorted set scored by time; each member is ``"<time %.17g>:<cost>"``. Entries of
  the same time are merged into one (the log's answers are the same). Reading it is
  O(limit).
"""

from __future__ import annotations

import hashlib

from .._core.gcra import EPSILON as GCRA_EPSILON
from .._core.window import EPSILON as WINDOW_EPSILON

__all__ = ("BATCH", "COUNTER", "GCRA_SCRIPT", "LOG", "SCRIPTS", "Script")


class Script:
    """A script's text and its SHA1 (computed here: EVALSHA needs no SCRIPT LOAD first)."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha!r})"


#: ``now``: ARGV[3] (a test's clock), or the server's TIME; ``extra_ms`` keeps the keys of
#: a test's clock an hour longer (every script that takes a time uses this one block)
NOW = """
local now
local extra_ms = 0
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
  extra_ms = 3600000
end
"""

_PROLOGUE = (
    """
local key = KEYS[1]
local mode = ARGV[1]
if mode == 'reset' then
  redis.call('DEL', key)
  return ''
end
local cost = tonumber(ARGV[2])
"""
    + NOW
    + """local function trunc(x)
  if x >= 0 then return math.floor(x) end
  return math.ceil(x)
end
local function ms(seconds)
  local m = math.ceil(seconds * 1000)
  if m > 1e12 then m = 1e12 end
  return string.format('%d', m + extra_ms)
end
local function answer(allowed, remaining, retry_after, reset_after)
  return string.format('%d %d %.17g %.17g %.17g', allowed, remaining, retry_after,
    reset_after, now)
end
"""
)

_GCRA = (
    _PROLOGUE
    + f"""
local EPSILON = {GCRA_EPSILON!r}
local interval = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local tat = -math.huge
local stored = redis.call('GET', key)
if stored then tat = tonumber(stored) end
local base = now
if tat > now then base = tat end
local new_tat = base + cost * interval
local ahead = new_tat - now
if ahead <= tolerance + EPSILON then
  if mode == 'hit' and ahead > 0 then
    redis.call('SET', key, string.format('%.17g', new_tat), 'PX', ms(ahead))
  end
  return answer(1, trunc((tolerance + EPSILON - ahead) / interval), 0, ahead)
end
local used = base - now
return answer(0, trunc((tolerance + EPSILON - used) / interval), ahead - tolerance, used)
"""
)

_COUNTER = (
    _PROLOGUE
    + f"""
local EPSILON = {WINDOW_EPSILON!r}
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local index = math.floor(now / window)
local offset = now - index * window
local current, previous = 0, 0
local stored = redis.call('GET', key)
if stored then
  local a, b, c = string.match(stored, '^(%S+) (%S+) (%S+)$')
  local old_index, old_current, old_previous = tonumber(a), tonumber(b), tonumber(c)
  if index == old_index then
    current, previous = old_current, old_previous
  elseif index == old_index + 1 then
    previous = old_current
  elseif index < old_index then
    index, current, previous, offset = old_index, old_current, old_previous, 0.0
  end
end
local function reset_after()
  if current > 0 then return 2 * window - offset end
  if previous > 0 then return window - offset end
  return 0.0
end
local weight = previous * (1.0 - offset / window)
if weight + current + cost <= limit + EPSILON then
  current = current + cost
  local reset = reset_after()
  if mode == 'hit' and reset > 0 then
    redis.call('SET', key, string.format('%.17g %d %d', index, current, previous),
      'PX', ms(reset))
  end
  return answer(1, math.max(0, trunc(limit - weight - current + EPSILON)), 0, reset)
end
local remaining = math.max(0, trunc(limit - weight - current + EPSILON))
local retry_after
local room = limit - current - cost
if previous > 0 and room >= 0 then
  local d = (previous * (1.0 - offset / window) - room) * window / previous
  if d <= window - offset then
    if d > 0.0 then retry_after = d else retry_after = 0.0 end
  end
end
if retry_after == nil then
  local to_next = window - offset
  if current + cost <= limit then
    retry_after = to_next
  else
    retry_after = to_next + (1.0 - (limit - cost) / current) * window
  end
end
return answer(0, remaining, retry_after, reset_after())
"""
)

_LOG = (
    _PROLOGUE
    + f"""
local EPSILON = {WINDOW_EPSILON!r}
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local horizon = now - window + EPSILON
local members = redis.call('ZRANGE', key, 0, -1)
local stamps, costs, total, n, expired = {{}}, {{}}, 0, 0, false
for i = 1, #members do
  local s, c = string.match(members[i], '^(%S+):(%d+)$')
  local stamp = tonumber(s)
  if stamp <= horizon then
    expired = true
  else
    n = n + 1
    stamps[n], costs[n] = stamp, tonumber(c)
    total = total + costs[n]
  end
end
if mode == 'hit' and expired then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', horizon))
end
if total + cost > limit then
  local excess = total + cost - limit
  local retry_after = 0
  for i = 1, n do
    excess = excess - costs[i]
    if excess <= 0 then
      retry_after = stamps[i] + window - now
      break
    end
  end
  return answer(0, limit - total, retry_after, stamps[n] + window - now)
end
if cost > 0 then
  total = total + cost
  if mode == 'hit' then
    local merged = cost
    if n > 0 and stamps[n] == now then
      merged = merged + costs[n]
      redis.call('ZREM', key, string.format('%.17g:%d', now, costs[n]))
    end
    redis.call('ZADD', key, string.format('%.17g', now), string.format('%.17g:%d', now, merged))
  end
  n = n + 1
  stamps[n] = now
end
if n == 0 then
  return answer(1, limit - total, 0, 0.0)
end
local reset = stamps[n] + window - now
if mode == 'hit' then
  redis.call('PEXPIRE', key, ms(reset))
end
return answer(1, limit - total, 0, reset)
"""
)

GCRA_SCRIPT = Script("gcra", _GCRA)
COUNTER = Script("counter", _COUNTER)
LOG = Script("log", _LOG)


def _function(name: str, body: str) -> str:
    # The body as a local function of KEYS and ARGV: it reads them as the lone script does.
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


# Many decisions in one call. KEYS are the decisions' keys; ARGV[1] holds, one line per
# key, that decision's script name and arguments, "name mode cost at param param" ("-"
# for an empty ``at``); the reply is their answers, one line each. One argument and one
# string reply instead of one per decision: a client library packs and parses each
# element of a command and of a reply on its own, in Python for redis-py, and that was
# most of the cost of a batch. The bodies are the lone scripts' own text, so a decision
# in a batch is the same as alone. Each runs under pcall: Redis does not roll a script
# back, so an error of one decision (a key holding another type: WRONGTYPE) must not
# abort the others after some of them wrote; its answer is "E <error>" instead (an
# answer otherwise starts with 0 or 1).
_BATCH = (
    _function("gcra", _GCRA)
    + _function("counter", _COUNTER)
    + _function("log", _LOG)
    + r"""
local run = {gcra = gcra, counter = counter, log = log}
local out = {}
local i = 0
for line in string.gmatch(ARGV[1], '[^\n]+') do
  i = i + 1
  local words = {}
  for word in string.gmatch(line, '%S+') do words[#words + 1] = word end
  if words[4] == '-' then words[4] = '' end
  local ok, answer = pcall(run[words[1]], {KEYS[i]},
    {words[2], words[3], words[4], words[5], words[6]})
  if ok then
    out[i] = answer
  else
    if type(answer) == 'table' then answer = answer.err end
    out[i] = 'E ' .. string.gsub(tostring(answer), '%s', ' ')
  end
end
return table.concat(out, '\n')
"""
)
BATCH = Script("batch", _BATCH)
"""Several decisions, each on its own key, in one call: for a cluster, keys of one slot."""

SCRIPTS: dict[str, Script] = {script.sha: script for script in (GCRA_SCRIPT, COUNTER, LOG)}
"""The lone scripts by SHA1 (a batch names each call's script)."""
