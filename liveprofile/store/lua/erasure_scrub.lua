-- Erasure: delete a change feed's deletion entries (deleted=1) once every destination has them.
-- KEYS[1] a change-feed stream; ARGV the ids of its deletion entries to consider.
-- An entry goes (XDEL) when every consumer group on the stream (one per sync destination:
-- sync:{dest}) has read past it (last-delivered-id >= id) and none holds it pending (unacknowledged);
-- with no group at all (no destination reads the feed) it goes at once. Returns how many went.
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  groups[#groups + 1] = {name, last}
end
local n = 0
for _, id in ipairs(ARGV) do
  local done = true
  for _, g in ipairs(groups) do
    if before(g[2], id) or #redis.call('XPENDING', KEYS[1], g[1], id, id, 1) > 0 then
      done = false
      break
    end
  end
  if done then n = n + redis.call('XDEL', KEYS[1], id) end
end
return n
