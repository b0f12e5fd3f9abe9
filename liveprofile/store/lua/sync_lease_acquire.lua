-- Take or renew a destination's sync lease.
-- KEYS[1] lease key; ARGV[1] consumer name, ARGV[2] TTL (ms)
-- Returns 1 held by this consumer (taken or renewed), 0 held by another.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
