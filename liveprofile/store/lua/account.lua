-- KEYS[1] account hash {p}:account:{groupId}, KEYS[2] its write times {p}:account-times:{groupId},
-- KEYS[3] its members set {p}:account-members:{groupId}
-- ARGV[1] member user id ('' none), ARGV[2] event time (ms), ARGV[3] group id,
-- ARGV[4..] trait name, JSON value pairs (built by liveprofile.store.scripts.account_argv; JSON
-- with sorted keys, 'null' unsets)
-- Per trait, last writer by event time; a tie goes to the larger JSON (so any arrival order, and
-- any replay, gives the same hash). The times hash keeps "<ms> <json>" of each trait's winner,
-- tombstones included (an older value arriving later does not resurrect an unset trait).
-- Returns the number of traits written.
local ts = tonumber(ARGV[2])
if ARGV[1] ~= '' then redis.call('SADD', KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[1], 'group_id', ARGV[3])
local n = 0
for i = 4, #ARGV, 2 do
  local name, json = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[2], name)
  local win = true
  if cur then
    local sep = string.find(cur, ' ', 1, true)
    local cts = tonumber(string.sub(cur, 1, sep - 1))
    local cjson = string.sub(cur, sep + 1)
    win = ts > cts or (ts == cts and json > cjson)
  end
  if win then
    redis.call('HSET', KEYS[2], name, ARGV[2] .. ' ' .. json)
    if json == 'null' then redis.call('HDEL', KEYS[1], name) else redis.call('HSET', KEYS[1], name, json) end
    n = n + 1
  end
end
return n
