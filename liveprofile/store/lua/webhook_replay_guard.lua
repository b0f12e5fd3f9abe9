-- A signed webhook delivery, appended at most once (the collector's replay guard).
-- KEYS[1] the delivery's replay key, KEYS[2..] the buffer streams to append to
-- ARGV[1] replay-key TTL (s), ARGV[2..] per append: MAXLEN (0: none; approximate), field count,
-- then field, value pairs
-- SET NX the replay key; only if it was new, XADD every append. An XADD error un-claims the
-- delivery (so the sender's retry is not refused as a replay) and is returned.
-- Returns 1 appended, 0 a replay.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local a = 2
for i = 2, #KEYS do
  local cap = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1]) * 2
  local args = {}
  for j = 1, n do args[j] = ARGV[a + 1 + j] end
  a = a + n + 2
  local r
  if cap > 0 then
    r = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', cap, '*', unpack(args))
  else
    r = redis.pcall('XADD', KEYS[i], '*', unpack(args))
  end
  if type(r) == 'table' and r.err then
    redis.call('DEL', KEYS[1])
    return r
  end
end
return 1
