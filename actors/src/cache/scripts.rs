//! The two Lua scripts that keep fills and invalidations ordered by Redis' own clock.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// KEYS: per user, its marker then its data keys. ARGV: the read's Redis time (µs), the TTL
/// (s), then per user the number of its data keys and the value. A user is written only if
/// no invalidation marker is as new as the read. Returns how many users were written.
pub(super) static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local read_at = tonumber(ARGV[1])
local k, a, written = 1, 3, 0
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local marker = redis.call('GET', KEYS[k])
  if not marker or tonumber(marker) < read_at then
    for j = 1, n do
      redis.call('SET', KEYS[k + j], ARGV[a + 1], 'EX', ARGV[2])
    end
    written = written + 1
  end
  k = k + n + 1
  a = a + 2
end
return written
",
    )
});

/// KEYS: per user, its marker then the keys to delete. ARGV: the markers' lifetime (ms), the
/// invalidation channel, then per user the number of keys to delete and the message. Marks
/// the time, deletes, publishes.
pub(super) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local k, a = 1, 3
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  redis.call('SET', KEYS[k], now, 'PX', ARGV[1])
  for j = 1, n do
    redis.call('DEL', KEYS[k + j])
  end
  redis.call('PUBLISH', ARGV[2], ARGV[a + 1])
  k = k + n + 1
  a = a + 2
end
return 1
",
    )
});
