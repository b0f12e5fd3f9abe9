-- KEYS[1] profile hash, KEYS[2..] exposure hashes; ARGV[1] user, ARGV[2] time, ARGV[3..] variants
local prof = redis.call('HMGET', KEYS[1], 'purchase_count', 'revenue_total')
local new = {}
for i = 2, #KEYS do
  local rec = cjson.encode({v = ARGV[i + 1], at = ARGV[2], pc = prof[1] or '0', rev = prof[2] or '0'})
  if redis.call('HSETNX', KEYS[i], ARGV[1], rec) == 1 then new[#new + 1] = i - 1 end
end
return new
