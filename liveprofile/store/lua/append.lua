-- One request's appends, all or nothing, under the exact backlog bound (the collector's appender).
-- KEYS[1] the buffer progress hash, KEYS[2..1+S] the S buffer streams (shards 0..S-1),
-- KEYS[2+S..] the other streams the request appends to (its dead letters), then (when ARGV[4+O]
-- is not 0) the suppressed-users set, at KEYS[ARGV[4+O]]
-- ARGV[1] backlog bound (-1: none), ARGV[2] S, ARGV[3] O (other streams), ARGV[4..3+O] the MAXLEN
-- of each other stream (0: none), ARGV[4+O] the KEYS index of the suppressed set (0: no check),
-- then per append: its KEYS index, member count M, M members (the ids it belongs to, as the
-- suppressed set names them), field count, field, value pairs
-- (built by liveprofile.store.scripts.append_call).
-- Suppression: an append with a member in the suppressed set is not written (a forgotten user's
-- event or dead letter); checked in the same atomic call as the writes, so no forget can slip
-- between the check and the append.
-- Bound: the backlog (per shard, entries ever added minus entries the dataflow read) plus this
-- request's events may not pass ARGV[1]; else nothing is written and the error BACKLOGFULL returned.
-- All or nothing: the bound is checked before the first write, and Redis refuses a script's OOM or
-- READONLY write only at its first write (the error is returned, nothing was written); after that
-- every XADD of the request runs (a script is atomic). Returns the 1-based positions of the
-- appends left out as suppressed (empty: all written).
local bound = tonumber(ARGV[1])
local shards = tonumber(ARGV[2])
local others = tonumber(ARGV[3])
local sup = tonumber(ARGV[4 + others])
-- no suppressed set (nobody forgotten yet): no member can be in it, skip the per-member lookups
if sup > 0 and redis.call('EXISTS', KEYS[sup]) == 0 then sup = 0 end
local first = 5 + others
-- one pass over the appends: {KEYS index, first field position, field count, kept}
local plan = {}
local a = first
while a <= #ARGV do
  local k = tonumber(ARGV[a])
  local nm = tonumber(ARGV[a + 1])
  local keep = true
  if sup > 0 then
    for j = 1, nm do
      if redis.call('SISMEMBER', KEYS[sup], ARGV[a + 1 + j]) == 1 then keep = false; break end
    end
  end
  local nf = tonumber(ARGV[a + 2 + nm])
  plan[#plan + 1] = {k, a + 3 + nm, nf * 2, keep}
  a = a + 3 + nm + nf * 2
end
if bound >= 0 then
  local n = 0
  for _, p in ipairs(plan) do
    if p[4] and p[1] >= 2 and p[1] <= 1 + shards then n = n + 1 end
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
local skipped = {}
for i, p in ipairs(plan) do
  if not p[4] then skipped[#skipped + 1] = i end
  if p[4] then
    local k = p[1]
    local args = {}
    local maxlen = 0
    if k > 1 + shards then maxlen = tonumber(ARGV[3 + k - 1 - shards]) end
    if maxlen > 0 then
      args[1] = 'MAXLEN'; args[2] = '~'; args[3] = maxlen; args[4] = '*'
    else
      args[1] = '*'
    end
    local base = #args
    for j = 1, p[3] do args[base + j] = ARGV[p[2] - 1 + j] end
    redis.call('XADD', KEYS[k], unpack(args))
  end
end
return skipped
