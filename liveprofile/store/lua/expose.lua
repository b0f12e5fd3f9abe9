-- KEYS[1] profile hash, KEYS[2] the user's suppressed set, KEYS[3..] exposure hashes;
-- ARGV[1] user, ARGV[2] time, ARGV[3..] variants.
-- A suppressed (forgotten) user is never recorded: the answer is then empty.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {} end
local prof = redis.call('HMGET', KEYS[1], 'purchase_count', 'revenue_total')
local new = {}
for i = 3, #KEYS do
  local rec = cjson.encode({v = ARGV[i], at = ARGV[2], pc = prof[1] or '0', rev = prof[2] or '0'})
  if redis.call('HSETNX', KEYS[i], ARGV[1], rec) == 1 then new[#new + 1] = i - 2 end
end
return new
