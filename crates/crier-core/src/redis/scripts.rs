//! The Lua scripts that make each cluster-wide step atomic in Redis. Every script
//! touches only keys of one hash tag (one channel, or one app), so it runs on one
//! shard of a Redis Cluster.

use redis::Script;
use std::sync::LazyLock;

/// Drops a channel's messages older than the age limit (a `cache-` channel keeps its
/// last), at most 100 per call so one call stays short. Shared by the scripts below.
const TRIM_BY_AGE: &str = r"
local function trim_by_age(hist, cutoff, keep_last)
  for _ = 1, 100 do
    local oldest = redis.call('ZRANGE', hist, 0, 0)
    if #oldest == 0 then return end
    local at = tonumber(string.match(oldest[1], '^M%d+ [^ ]+ (%d+) '))
    if at == nil or at >= cutoff then return end
    if keep_last and redis.call('ZCARD', hist) <= 1 then return end
    redis.call('ZREMRANGEBYRANK', hist, 0, 0)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The channel's epoch; a channel Redis does not know (never published, expired,
-- evicted, lost in a restart) starts a new one, and whatever history is left of an
-- older epoch goes with it.
local function epoch_of(meta, hist, candidate, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
    redis.call('PEXPIRE', meta, meta_ttl)
    redis.call('DEL', hist)
  end
  return epoch
end
";

/// Publishes a batch: KEYS are (meta, history) pairs, one per channel; ARGV is the
/// publish command, an epoch for channels without one, max messages, max age (ms),
/// meta ttl (ms), the message count, then per message: channel pair index, topic,
/// `1` for a `cache-` channel, body. Returns `{offset, epoch, ms}` per message.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{TRIM_BY_AGE}{}",
        r"
local now = now_ms()
local max_messages = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local meta_ttl = tonumber(ARGV[5])
local count = tonumber(ARGV[6])
local out = {}
for i = 0, count - 1 do
  local at = 7 + i * 4
  local pair = tonumber(ARGV[at])
  local meta, hist = KEYS[pair * 2 - 1], KEYS[pair * 2]
  local cache = ARGV[at + 2] == '1'
  local epoch = epoch_of(meta, hist, ARGV[2], meta_ttl)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local payload = 'M' .. seq .. ' ' .. epoch .. ' ' .. now .. ' ' .. ARGV[at + 3]
  redis.call('ZADD', hist, seq, payload)
  redis.call('ZREMRANGEBYRANK', hist, 0, -(max_messages + 1))
  trim_by_age(hist, now - max_age, cache)
  if not cache then redis.call('PEXPIRE', hist, max_age) end
  redis.call('PEXPIRE', meta, meta_ttl)
  redis.call(ARGV[1], ARGV[at + 1], payload)
  out[#out + 1] = {seq, epoch, now}
end
return out
"
    ))
});

/// Reads a channel: KEYS meta, history; ARGV after (offset), limit, epoch for a
/// channel without one, max age (ms), ttl (ms) of a meta the read creates, `1` for a
/// `cache-` channel. (A read creates a channel's epoch so that a cursor given before
/// the first publish stays valid after it; the short ttl keeps reads of channels that
/// are never published, which anyone with the app key can make, from piling up.)
/// Returns `{epoch, last offset, oldest retained offset or -1, {payloads...}}`; with
/// limit `-1`, the payloads are only the newest message.
pub(crate) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{TRIM_BY_AGE}{}",
        r"
local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[3], tonumber(ARGV[5]))
trim_by_age(KEYS[2], now_ms() - tonumber(ARGV[4]), ARGV[6] == '1')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local oldest = -1
if #first > 0 then oldest = tonumber(first[2]) end
local items
local limit = tonumber(ARGV[2])
if limit < 0 then
  items = redis.call('ZRANGE', KEYS[2], -1, -1)
elseif limit == 0 then
  items = {}
else
  items = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, limit)
end
return {epoch, seq, oldest, items}
"
    ))
});

/// Changes one node's share of a channel: KEYS subscriptions, occupancy, node counts
/// (of one app); ARGV channel, subscription delta, hold delta. Returns 1 when this
/// occupied the channel in the cluster, -1 when it vacated it, else 0.
pub(crate) static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local channel = ARGV[1]
local subs, holds = tonumber(ARGV[2]), tonumber(ARGV[3])
local function add(key, field, by)
  local n = redis.call('HINCRBY', key, field, by)
  if n <= 0 then redis.call('HDEL', key, field) end
  return n
end
local before = tonumber(redis.call('HGET', KEYS[2], channel) or '0')
if subs ~= 0 then
  add(KEYS[3], 's:' .. channel, subs)
  add(KEYS[1], channel, subs)
end
if holds ~= 0 then add(KEYS[3], 'h:' .. channel, holds) end
local after = add(KEYS[2], channel, subs + holds)
if before <= 0 and after > 0 then return 1 end
if before > 0 and after <= 0 then return -1 end
return 0
",
    )
});

/// Replaces one node's share of an app's channels with `ARGV` (field, count pairs,
/// fields `s:<channel>` or `h:<channel>`); KEYS subscriptions, occupancy, node counts.
/// With no ARGV it removes the node's share (a node that stopped). Returns
/// `{occupied channels, vacated channels}`.
pub(crate) static REPLACE_SHARE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local before = {}
local function apply(field, by)
  local channel = string.sub(field, 3)
  if before[channel] == nil then
    before[channel] = tonumber(redis.call('HGET', KEYS[2], channel) or '0')
  end
  if string.sub(field, 1, 1) == 's' then
    local n = redis.call('HINCRBY', KEYS[1], channel, by)
    if n <= 0 then redis.call('HDEL', KEYS[1], channel) end
  end
  local n = redis.call('HINCRBY', KEYS[2], channel, by)
  if n <= 0 then redis.call('HDEL', KEYS[2], channel) end
end
local old = redis.call('HGETALL', KEYS[3])
for i = 1, #old, 2 do apply(old[i], -tonumber(old[i + 1])) end
redis.call('DEL', KEYS[3])
for i = 1, #ARGV, 2 do
  apply(ARGV[i], tonumber(ARGV[i + 1]))
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
local occupied, vacated = {}, {}
for channel, was in pairs(before) do
  local now = tonumber(redis.call('HGET', KEYS[2], channel) or '0')
  if was <= 0 and now > 0 then occupied[#occupied + 1] = channel end
  if was > 0 and now <= 0 then vacated[#vacated + 1] = channel end
end
return {occupied, vacated}
",
    )
});

/// Presence join: KEYS holders, users, infos; ARGV holder, user, info, max members.
/// Returns 0 for a new member, 1 for another connection of a member, 2 when full.
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
redis.call('HSET', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
",
    )
});

/// Presence leave: KEYS holders, users, infos; ARGV holder. Returns the user when it
/// was their last holder, else false.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
  redis.call('HDEL', KEYS[2], user)
  redis.call('HDEL', KEYS[3], user)
  return user
end
return false
",
    )
});
