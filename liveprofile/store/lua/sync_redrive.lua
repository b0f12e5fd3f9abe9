-- KEYS[1] dead-letter stream, KEYS[2] redrive stream; ARGV entry ids
local n = 0
for _, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    local f = e[1][2]
    local item, reason = nil, nil
    for j = 1, #f, 2 do
      if f[j] == 'item' then item = f[j + 1] elseif f[j] == 'reason' then reason = f[j + 1] end
    end
    if item and reason ~= 'malformed' then
      redis.call('XADD', KEYS[2], '*', 'item', item, 'dead_letter_id', id)
      redis.call('XDEL', KEYS[1], id)
      n = n + 1
    end
  end
end
return n
