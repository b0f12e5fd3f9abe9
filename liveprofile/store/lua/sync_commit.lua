-- KEYS[1] watermark hash, KEYS[2] dead-letter stream
-- ARGV[1] dead-letter MAXLEN, ARGV[2] time, then per item 6 values:
--   user, version (-1: a deletion: the user's watermark field goes), item JSON ('' when delivered),
--   reason, status, attempts
for i = 3, #ARGV, 6 do
  local v = tonumber(ARGV[i + 1])
  if v < 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
    if v > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
  if ARGV[i + 2] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'item', ARGV[i + 2], 'reason', ARGV[i + 3],
               'status', ARGV[i + 4], 'attempts', ARGV[i + 5], 'at', ARGV[2])
  end
end
return 1
