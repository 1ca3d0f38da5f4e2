"""Redis key names and the Lua scripts behind key grants and limits.

Every script runs atomically inside Redis, so a check and the write it guards cannot be
split by another gateway process. All names live under ``openmaas:``:

- ``openmaas:apikey:<sha256>`` — a key's cached grant (JSON) or ``-`` for a bad key;
- ``openmaas:apikey:revoked:<sha256>`` — revocation tombstone (no cache fill revives it);
- ``openmaas:grants:gen:<user id>`` — generation of a user's grants (bumped on change);
- ``openmaas:grants:user:<user id>`` — set of the key hashes cached for that user;
- ``openmaas:authfail:<client address>`` — failed authentications this minute;
- ``openmaas:rl:<bucket>`` — request and token buckets (hash: level and time of each,
  ``rv``/``rt`` and ``tv``/``tt``);
- ``openmaas:rl:<bucket>:conc`` — requests in flight (sorted set, score = lease expiry);
- ``openmaas:budget:u:<user id>:<YYYYMM>`` / ``openmaas:budget:o:<org id>:<YYYYMM>`` —
  tokens (``tok``) and spend in micro-CNY (``ucny``) used in a UTC calendar month.

``<bucket>`` is ``k<key id>`` for an API key, ``u<user id>`` for a browser session.
"""

from __future__ import annotations

GRANT_PREFIX = "openmaas:apikey:"
TOMBSTONE_PREFIX = "openmaas:apikey:revoked:"
GENERATION_PREFIX = "openmaas:grants:gen:"
USER_INDEX_PREFIX = "openmaas:grants:user:"
AUTH_FAIL_PREFIX = "openmaas:authfail:"
RATE_PREFIX = "openmaas:rl:"
BUDGET_PREFIX = "openmaas:budget:"


def rate_keys(bucket: str) -> list[str]:
    """The bucket's rate hash (requests ``rv``/``rt``, tokens ``tv``/``tt``) and its
    in-flight set."""
    base = RATE_PREFIX + bucket
    return [base, base + ":conc"]


def budget_key(kind: str, owner_id: int | None, month: str) -> str:
    """``kind`` is ``u`` (user) or ``o`` (organisation)."""
    return f"{BUDGET_PREFIX}{kind}:{owner_id or 0}:{month}"


# KEYS: grant cache, auth-failure counter. ARGV: failures allowed per minute.
# Returns the cached grant, "-" for a known bad key (counted as a failure), "T" when the
# address is throttled, or nil on a miss (the caller then asks the database).
AUTH_LOOKUP = """
local v = redis.call('GET', KEYS[1])
if v and v ~= '-' then return v end
local limit = tonumber(ARGV[1])
if v == '-' then
  local fails = redis.call('INCR', KEYS[2])
  if fails == 1 then redis.call('EXPIRE', KEYS[2], 60) end
  if fails > limit then return 'T' end
  return '-'
end
local fails = tonumber(redis.call('GET', KEYS[2]) or '0')
if fails >= limit then return 'T' end
return false
"""

# KEYS: grant cache, tombstone, user generation, user index, auth-failure counter.
# ARGV: grant JSON or "-", ttl, the generation read before the grant's roles, key hash.
# Returns 1 when cached, 0 when the key is revoked (tombstone: never revived), 2 when
# the user's grants changed since the read (serve once, do not cache).
FILL_GRANT = """
local ttl = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], '-', 'EX', ttl)
  return 0
end
if ARGV[1] == '-' then
  redis.call('SET', KEYS[1], '-', 'EX', ttl)
  local fails = redis.call('INCR', KEYS[5])
  if fails == 1 then redis.call('EXPIRE', KEYS[5], 60) end
  return 1
end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[3] then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('EXPIRE', KEYS[4], ttl + 60)
return 1
"""

# KEYS: user generation, user index. ARGV: grant cache prefix.
# Drops every cached grant of the user and bumps the generation, so a fill that read
# the user's roles before the change is not cached.
INVALIDATE_USER = """
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 604800)
local hashes = redis.call('SMEMBERS', KEYS[2])
for _, h in ipairs(hashes) do redis.call('DEL', ARGV[1] .. h) end
redis.call('DEL', KEYS[2])
return #hashes
"""

# KEYS: rate buckets (hash: requests rv/rt, tokens tv/tt), in-flight set, user budget,
# org budget.
# ARGV: rpm, tpm, max concurrent (0 = unlimited), tokens to reserve, micro-CNY to
# reserve, user token budget, user spend budget, org token budget, org spend budget
# (-1 = unlimited; the org ones are -1 for a key without a billing organisation),
# request id, concurrency lease seconds, has a billing organisation (0/1).
# Returns {verdict, requests left, ms until the request bucket is full, tokens left,
# ms until the token bucket is full, retry-after ms}; verdict "ok" or what refused it:
# "concurrency", "requests", "tokens", "too_large", "user_tokens", "user_spend",
# "org_tokens", "org_spend".
# The start of RESERVE and LEASE: ARGV[1..3] are rpm, tpm and max concurrent; the
# buckets' levels now (``level``), the time until one is full (``full_ms``), writing
# both back (``store``), and adding to a monthly budget counter (``count``).
_BUCKETS = """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local b = redis.call('HMGET', KEYS[1], 'rv', 'rt', 'tv', 'tt')
local function level(v, at, cap)
  v, at = tonumber(v), tonumber(at)
  if not v then return cap end
  return math.min(cap, v + (now - at) * cap / 60)
end
local function full_ms(v, cap)
  if cap <= 0 then return 0 end
  return math.ceil(math.max(0, cap - v) * 60000 / cap)
end
local function store(r, k)
  if rpm <= 0 and tpm <= 0 then return end
  local fields, debt = {}, 0
  if rpm > 0 then fields = {'rv', r, 'rt', now} end
  if tpm > 0 then
    fields[#fields + 1], fields[#fields + 2] = 'tv', k
    fields[#fields + 1], fields[#fields + 2] = 'tt', now
    debt = math.ceil(math.max(0, -k) * 60 / tpm)
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], 61 + debt)
end
local function count(key, tokens, ucny)
  if redis.call('HINCRBY', key, 'tok', tokens) == tokens then
    redis.call('EXPIRE', key, 3456000)
  end
  redis.call('HINCRBY', key, 'ucny', ucny)
end
"""

RESERVE = (
    _BUCKETS
    + """
local need, spend = tonumber(ARGV[4]), tonumber(ARGV[5])
local req = rpm > 0 and level(b[1], b[2], rpm) or 0
local tok = tpm > 0 and level(b[3], b[4], tpm) or 0
local function answer(verdict, r, k, retry_ms)
  return {verdict, math.floor(math.max(r, 0)), full_ms(r, rpm),
          math.floor(math.max(k, 0)), full_ms(k, tpm), math.ceil(retry_ms)}
end

if conc > 0 and redis.call('ZCARD', KEYS[2]) >= conc then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return answer('concurrency', req, tok, 1000) end
end
if rpm > 0 and req < 1 then return answer('requests', req, tok, (1 - req) * 60000 / rpm) end
if tpm > 0 then
  if need > tpm then return answer('too_large', req, tok, 60000) end
  if tok < need then return answer('tokens', req, tok, (need - tok) * 60000 / tpm) end
end
local function over(key, field, budget, amount)
  if budget < 0 then return false end
  return tonumber(redis.call('HGET', key, field) or '0') + amount > budget
end
if over(KEYS[3], 'tok', tonumber(ARGV[6]), need) then return answer('user_tokens', req, tok, 0) end
if over(KEYS[3], 'ucny', tonumber(ARGV[7]), spend) then return answer('user_spend', req, tok, 0) end
if over(KEYS[4], 'tok', tonumber(ARGV[8]), need) then return answer('org_tokens', req, tok, 0) end
if over(KEYS[4], 'ucny', tonumber(ARGV[9]), spend) then return answer('org_spend', req, tok, 0) end

if rpm > 0 then req = req - 1 end
if tpm > 0 then tok = tok - need end
store(req, tok)
if conc > 0 then
  local lease = tonumber(ARGV[11])
  redis.call('ZADD', KEYS[2], now + lease, ARGV[10])
  redis.call('EXPIRE', KEYS[2], lease)
end
count(KEYS[3], need, spend)
if ARGV[12] == '1' then count(KEYS[4], need, spend) end
return answer('ok', req, tok, 0)
"""
)

# KEYS: for each settlement, its rate buckets, in-flight set, user budget, org budget;
# then the usage stream.
# ARGV: the stream's approximate maximum length; for each settlement, tpm, request id,
# token delta (actual - reserved), micro-CNY delta, has org (0/1); then stream entries,
# each a batch of usage events (compute.metering.pack_rows). Settles in order, then
# appends the entries (one field, "b", each); returns how many settlements.
SETTLE = """
local now
local n = (#KEYS - 1) / 4
for i = 0, n - 1 do
  local k, a = i * 4, 1 + i * 5
  redis.call('ZREM', KEYS[k + 2], ARGV[a + 2])
  local tpm, delta, spend = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if tpm > 0 and delta ~= 0 then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    end
    local h = redis.call('HMGET', KEYS[k + 1], 'tv', 'tt')
    local v, at = tonumber(h[1]), tonumber(h[2])
    if not v then v, at = tpm, now end
    v = math.min(tpm, math.min(tpm, v + (now - at) * tpm / 60) - delta)
    redis.call('HSET', KEYS[k + 1], 'tv', v, 'tt', now)
    redis.call('EXPIRE', KEYS[k + 1], 61 + math.ceil(math.max(0, -v) * 60 / tpm))
  end
  if delta ~= 0 or spend ~= 0 then
    redis.call('HINCRBY', KEYS[k + 3], 'tok', delta)
    redis.call('HINCRBY', KEYS[k + 3], 'ucny', spend)
    if ARGV[a + 5] == '1' then
      redis.call('HINCRBY', KEYS[k + 4], 'tok', delta)
      redis.call('HINCRBY', KEYS[k + 4], 'ucny', spend)
    end
  end
end
local stream = KEYS[#KEYS]
for i = 2 + n * 5, #ARGV do
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', 'b', ARGV[i])
end
return n
"""

# KEYS: rate buckets, in-flight set, user budget, org budget (as RESERVE).
# ARGV: rpm, tpm, max concurrent, lease id, slots wanted, requests to take, tokens to
# take, requests handed back, tokens handed back (negative when its requests used more
# than they reserved), tokens used and micro-CNY spent since the last call (added to the
# budget counters), has a billing organisation (0/1), slots held now, slot lease seconds.
# Takes the requests and tokens, both or neither; hand-backs and usage always count.
# Concurrency slots are members <lease id>#1..n of the in-flight set with a short expiry:
# the ones still held are refreshed (up to the number wanted; the rest dropped) and more
# are added while the set has room, up to the number wanted (0: hand them all back).
# Returns {verdict, requests left, ms until the request bucket is full, tokens left, ms
# until the token bucket is full, slots held}; verdict "ok", "requests" or "tokens".
LEASE = (
    _BUCKETS
    + """
local want_req, want_tok = tonumber(ARGV[6]), tonumber(ARGV[7])
local req = rpm > 0 and math.min(rpm, level(b[1], b[2], rpm) + tonumber(ARGV[8])) or 0
local tok = tpm > 0 and math.min(tpm, level(b[3], b[4], tpm) + tonumber(ARGV[9])) or 0

local used, spent = tonumber(ARGV[10]), tonumber(ARGV[11])
if used ~= 0 or spent ~= 0 then
  count(KEYS[3], used, spent)
  if ARGV[12] == '1' then count(KEYS[4], used, spent) end
end

local verdict = 'ok'
if rpm > 0 and req < want_req then verdict = 'requests' end
if verdict == 'ok' and tpm > 0 and tok < want_tok then verdict = 'tokens' end
if verdict == 'ok' then req, tok = req - want_req, tok - want_tok end

local slots = 0
if conc > 0 then
  local want, held, ttl = tonumber(ARGV[5]), tonumber(ARGV[13]), tonumber(ARGV[14])
  local member = ARGV[4] .. '#'
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local kept = 0
  for i = 1, math.min(want, held) do
    if not redis.call('ZSCORE', KEYS[2], member .. i) then break end
    kept = i
  end
  for i = kept + 1, held do redis.call('ZREM', KEYS[2], member .. i) end
  slots = kept + math.max(0, math.min(want - kept, conc - redis.call('ZCARD', KEYS[2])))
  for i = 1, slots do redis.call('ZADD', KEYS[2], now + ttl, member .. i) end
  if slots > 0 and redis.call('TTL', KEYS[2]) < ttl then
    redis.call('EXPIRE', KEYS[2], math.ceil(ttl))
  end
end

store(req, tok)
return {verdict, math.floor(math.max(req, 0)), full_ms(req, rpm),
        math.floor(math.max(tok, 0)), full_ms(tok, tpm), slots}
"""
)
