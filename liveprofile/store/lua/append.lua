-- One request's appends, all or nothing, under the exact backlog bound (the collector's appender).
-- KEYS[1] the buffer progress hash, KEYS[2..1+S] the S buffer streams (shards 0..S-1),
-- KEYS[2+S..] the other streams the request appends to (its dead letters)
-- ARGV[1] backlog bound (-1: none), ARGV[2] S, ARGV[3] O (other streams), ARGV[4..3+O] the MAXLEN
-- of each other stream (0: none), then per append: its KEYS index, field count, field, value pairs
-- (built by liveprofile.store.scripts.append_argv).
-- Bound: the backlog (per shard, entries ever added minus entries the dataflow read) plus this
-- request's events may not pass ARGV[1]; else nothing is written and the error BACKLOGFULL returned.
-- All or nothing: the bound is checked before the first write, and Redis refuses a script's OOM or
-- READONLY write only at its first write (the error is returned, nothing was written); after that
-- every XADD of the request runs (a script is atomic). Returns the number of appends.
local bound = tonumber(ARGV[1])
local shards = tonumber(ARGV[2])
local others = tonumber(ARGV[3])
local first = 4 + others
if bound >= 0 then
  local n = 0
  local a = first
  while a <= #ARGV do
    local k = tonumber(ARGV[a])
    if k >= 2 and k <= 1 + shards then n = n + 1 end
    a = a + 2 + tonumber(ARGV[a + 1]) * 2
  end
  if n > 0 then
    local backlog = 0
    local read = redis.call('HGETALL', KEYS[1])
    local progress = {}
    for i = 1, #read, 2 do progress[read[i]] = tonumber(read[i + 1]) end
    for s = 0, shards - 1 do
      if redis.call('EXISTS', KEYS[2 + s]) == 1 then
        local info = redis.call('XINFO', 'STREAM', KEYS[2 + s])
        for i = 1, #info, 2 do
          if info[i] == 'entries-added' then
            local left = info[i + 1] - (progress[tostring(s)] or 0)
            if left > 0 then backlog = backlog + left end
          end
        end
      end
    end
    if backlog + n > bound then
      return redis.error_reply('BACKLOGFULL the buffer backlog is ' .. backlog .. ' events; ' .. n .. ' more would pass the bound of ' .. bound)
    end
  end
end
local a = first
local count = 0
while a <= #ARGV do
  local k = tonumber(ARGV[a])
  local nf = tonumber(ARGV[a + 1]) * 2
  local args = {}
  local maxlen = 0
  if k > 1 + shards then maxlen = tonumber(ARGV[3 + k - 1 - shards]) end
  if maxlen > 0 then
    args[1] = 'MAXLEN'; args[2] = '~'; args[3] = maxlen; args[4] = '*'
  else
    args[1] = '*'
  end
  local base = #args
  for j = 1, nf do args[base + j] = ARGV[a + 1 + j] end
  redis.call('XADD', KEYS[k], unpack(args))
  count = count + 1
  a = a + 2 + nf
end
return count
