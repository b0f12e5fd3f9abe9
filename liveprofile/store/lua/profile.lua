-- KEYS[1] profile hash, KEYS[2] change feed, KEYS[3] suppressed-users set
-- ARGV: 1 seq, 2 updated_at, 3 change-feed MAXLEN, 4 user id, 5 trigger event JSON or '',
--       6 key prefix, 7 mode (upsert | patch | tombstone | delete),
--       8 the fields as one JSON array [field, value, field, value, ...] (string values; '' for none),
--       9 '1' for an anonymous profile (KEYS[1] in the profile-anon family: no segment sets, no
--         audience sets, no suppression check, change-feed entries carry anonymous=1), else '',
--       10 event_at: ISO 8601 time of the event that caused the write ('' : updated_at is used)
-- Audiences (a known profile's `audiences` field, a sorted JSON array): membership in
-- {prefix}:audience:{name}; an entry whose `audiences` changed carries audiences_entered /
-- audiences_exited (sorted JSON arrays, omitted when empty) and event_at; tombstone and delete
-- leave every set and the entry carries audiences_exited with all of them.
-- Built by liveprofile.store.scripts.profile_argv; returns a ProfileResult there:
-- 0 stale, 1 written, 2 nothing changed, 3 suppressed
local mode = ARGV[7]
local anon = ARGV[9] == '1'
if mode ~= 'delete' and not anon and redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then return 3 end
local cur = redis.call('HMGET', KEYS[1], 'seq', 'version', 'merged_into')
if mode == 'patch' then
  if cur[3] then return 0 end
elseif mode ~= 'delete' and cur[1] and tonumber(ARGV[1]) < tonumber(cur[1]) then
  return 0
end
local names = {}
local values = {}
if ARGV[8] ~= '' then
  local a = cjson.decode(ARGV[8])
  for i = 1, #a, 2 do
    names[#names + 1] = a[i]
    values[#values + 1] = tostring(a[i + 1])
  end
end
-- @segments: rendered from operators.schema at load (liveprofile.store.scripts); kept equal here by a test
local seg = {top_category = 'segment:interest:', rfm_segment = 'segment:'}; local flag = {cart_abandoned = 'segment:cart_abandoned', suspect = 'segment:suspect'}
if anon then seg = {}; flag = {} end
local prefix = ARGV[6] .. ':'
local changed = {}
local n = 0
local set = {}
local event_at = ARGV[10]
if event_at == nil or event_at == '' then event_at = ARGV[2] end
local entered = {}
local exited = {}
-- the audience transitions between two `audiences` values (JSON arrays), sets moved
local function audiences(o, v)
  if anon then return end
  local before = {}
  local after = {}
  if o and o ~= '' then for _, a in ipairs(cjson.decode(o)) do before[a] = true end end
  if v and v ~= '' then
    for _, a in ipairs(cjson.decode(v)) do
      after[a] = true
      if not before[a] then entered[#entered + 1] = a; redis.call('SADD', prefix .. 'audience:' .. a, ARGV[4]) end
    end
  end
  if o and o ~= '' then
    for _, a in ipairs(cjson.decode(o)) do
      if not after[a] then exited[#exited + 1] = a; redis.call('SREM', prefix .. 'audience:' .. a, ARGV[4]) end
    end
  end
  table.sort(entered)
  table.sort(exited)
end
local function transitions(entry)
  if #entered > 0 then entry[#entry + 1] = 'audiences_entered'; entry[#entry + 1] = cjson.encode(entered) end
  if #exited > 0 then entry[#entry + 1] = 'audiences_exited'; entry[#entry + 1] = cjson.encode(exited) end
  if #entered > 0 or #exited > 0 then entry[#entry + 1] = 'event_at'; entry[#entry + 1] = event_at end
end
if mode == 'delete' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local f = all[i]
    if seg[f] and all[i + 1] ~= '' then redis.call('SREM', prefix .. seg[f] .. all[i + 1], ARGV[4]) end
    if flag[f] and all[i + 1] == '1' then redis.call('SREM', prefix .. flag[f], ARGV[4]) end
    if f == 'audiences' then audiences(all[i + 1], '') end
  end
  local ids = redis.call('HMGET', KEYS[1], 'email', 'anonymous_ids')
  redis.call('DEL', KEYS[1])
  local version = tostring((tonumber(cur[2]) or 0) + 1)
  local identities = cjson.encode({email = ids[1] or '', anonymous_ids = ids[2] or '[]'})
  local dentry = {'user_id', ARGV[4], 'version', version, 'changed', '{}', 'updated_at', ARGV[2], 'deleted', '1', 'identities', identities}
  if anon then dentry[#dentry + 1] = 'anonymous'; dentry[#dentry + 1] = '1' end
  transitions(dentry)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(dentry))
  return 1
end
if mode == 'tombstone' then
  local all = redis.call('HGETALL', KEYS[1])
  local del = {}
  for i = 1, #all, 2 do
    local f = all[i]
    if f ~= 'user_id' and f ~= 'version' and f ~= 'seq' then
      del[#del + 1] = f
      if seg[f] and all[i + 1] ~= '' then redis.call('SREM', prefix .. seg[f] .. all[i + 1], ARGV[4]) end
      if flag[f] and all[i + 1] == '1' then redis.call('SREM', prefix .. flag[f], ARGV[4]) end
      if f == 'audiences' then audiences(all[i + 1], '') end
    end
  end
  if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
  n = #del
end
local old = {}
if #names > 0 and mode ~= 'tombstone' then old = redis.call('HMGET', KEYS[1], unpack(names)) end
for j = 1, #names do
  local f = names[j]
  local v = values[j]
  local o = old[j]
  if o ~= v then
    set[#set + 1] = f
    set[#set + 1] = v
    changed[f] = v
    n = n + 1
    if seg[f] then
      if o and o ~= '' then redis.call('SREM', prefix .. seg[f] .. o, ARGV[4]) end
      if v ~= '' then redis.call('SADD', prefix .. seg[f] .. v, ARGV[4]) end
    elseif flag[f] then
      if v == '1' then redis.call('SADD', prefix .. flag[f], ARGV[4]) else redis.call('SREM', prefix .. flag[f], ARGV[4]) end
    elseif f == 'audiences' then
      audiences(o, v)
    end
  end
end
if mode ~= 'patch' then
  set[#set + 1] = 'seq'
  set[#set + 1] = ARGV[1]
end
if n == 0 and ARGV[5] == '' then
  if mode ~= 'patch' then redis.call('HSET', KEYS[1], 'seq', ARGV[1]) end
  return 2
end
local version = tostring((tonumber(cur[2]) or 0) + 1)
set[#set + 1] = 'version'
set[#set + 1] = version
set[#set + 1] = 'updated_at'
set[#set + 1] = ARGV[2]
redis.call('HSET', KEYS[1], unpack(set))
local payload = '{}'
if n > 0 then payload = cjson.encode(changed) end
local entry = {'user_id', ARGV[4], 'version', version, 'changed', payload, 'updated_at', ARGV[2]}
if anon then
  entry[#entry + 1] = 'anonymous'
  entry[#entry + 1] = '1'
end
if ARGV[5] ~= '' then
  entry[#entry + 1] = 'event'
  entry[#entry + 1] = ARGV[5]
end
transitions(entry)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
return 1
