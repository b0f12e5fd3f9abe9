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
-- leave every set and the entry carries audiences_exited with all of them. Late audiences: see
-- `audience_rules` below (that field is stored but is no change: no entry, no version bump).
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
local seg = {top_category = 'segment:interest:', rfm_segment = 'segment:'}; local flag = {cart_abandoned = 'segment:cart_abandoned', suspect = 'segment:suspect'}; local late = {rfm_r = 'int', rfm_f = 'int', rfm_m = 'int', rfm_segment = 'text', anomaly_score = 'float', suspect = 'flag', purchase_propensity = 'float'}
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
-- Late audiences (operators.residual): `audience_rules` holds, per late audience in dependency
-- order, what is left of its `when` once the per-user step filled in all it knows; it reads only
-- the late fields (RFM scores, model outputs) and late audiences. They are decided here, whenever
-- the rules or a late field change, so `audiences` = the step's early ones (an upsert's value, or
-- the stored ones for a patch) + the late ones that hold. Values typed as operators.audiences does.
local function lt(a, b) -- byte order (code-point order of UTF-8), whatever the server's locale
  local m = math.min(#a, #b)
  for i = 1, m do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function kind(v)
  local t = type(v)
  if t == 'boolean' then return 'bool' elseif t == 'number' then return 'num' elseif t == 'string' then return 'str' end
  return 'null'
end
local function cmp(op, a, b)
  local ka = kind(a)
  if ka ~= kind(b) or ka == 'null' then return false end
  if op == '==' then return a == b elseif op == '!=' then return a ~= b end
  if ka == 'bool' then return false end
  if ka == 'str' then
    if op == '<' then return lt(a, b) elseif op == '<=' then return not lt(b, a) elseif op == '>' then return lt(b, a) end
    return not lt(a, b)
  end
  if op == '<' then return a < b elseif op == '<=' then return a <= b elseif op == '>' then return a > b end
  return a >= b
end
local function typed(k, s)
  if type(s) ~= 'string' then return nil end
  if k == 'text' then return s end
  if k == 'flag' then if s == '1' then return true elseif s == '0' then return false end return nil end
  if k == 'int' and not string.match(s, '^%s*[-+]?%d+%s*$') then return nil end
  local x = tonumber(s)
  if x == nil or x ~= x then return nil end
  return x
end
local function ev(n, vals, auds)
  if n == true or n == false then return n end
  local tag = n[1]
  if tag == 'f' then return vals[n[2]] end
  if tag == 'a' then return auds[n[2]] == true end
  if tag == 'v' then return n[2] end
  if tag == 'cmp' then return cmp(n[2], ev(n[3], vals, auds), ev(n[4], vals, auds)) end
  if tag == 'nul' then
    local x = ev(n[3], vals, auds)
    if n[2] == '==' then return x == nil end
    return x ~= nil
  end
  if tag == 'in' then
    local x = ev(n[2], vals, auds)
    for _, v in ipairs(n[3]) do
      if v == cjson.null then
        if x == nil then return true end
      elseif cmp('==', x, v) then
        return true
      end
    end
    return false
  end
  if tag == 'not' then return ev(n[2], vals, auds) ~= true end
  if tag == 'and' then return ev(n[2], vals, auds) == true and ev(n[3], vals, auds) == true end
  if tag == 'or' then return ev(n[2], vals, auds) == true or ev(n[3], vals, auds) == true end
  return false
end
if mode == 'upsert' or mode == 'patch' then
  local idx = {}
  for j = 1, #names do idx[names[j]] = j end
  local touched = idx['audiences'] or idx['audience_rules']
  if not touched then for f, _ in pairs(late) do if idx[f] then touched = true; break end end end
  local rules_s = false
  if touched then
    if idx['audience_rules'] then rules_s = values[idx['audience_rules']] else rules_s = redis.call('HGET', KEYS[1], 'audience_rules') end
  end
  if rules_s and rules_s ~= '' and rules_s ~= '[]' then
    local rules = cjson.decode(rules_s)
    local lnames = {}
    for f, _ in pairs(late) do lnames[#lnames + 1] = f end
    local stored = redis.call('HMGET', KEYS[1], unpack(lnames))
    local vals = {}
    for i, f in ipairs(lnames) do
      local s = stored[i]
      if idx[f] then s = values[idx[f]] end
      vals[f] = typed(late[f], s)
    end
    local auds = {}
    for _, r in ipairs(rules) do auds[r[1]] = ev(r[2], vals, auds) == true end
    local base
    if idx['audiences'] then base = values[idx['audiences']] else base = redis.call('HGET', KEYS[1], 'audiences') end
    local final = {}
    if base and base ~= '' then
      for _, a in ipairs(cjson.decode(base)) do if auds[a] == nil then final[#final + 1] = a end end
    end
    for _, r in ipairs(rules) do if auds[r[1]] then final[#final + 1] = r[1] end end
    table.sort(final, lt)
    local enc = '[]'
    if #final > 0 then enc = cjson.encode(final) end
    if idx['audiences'] then
      values[idx['audiences']] = enc
    else
      names[#names + 1] = 'audiences'
      values[#values + 1] = enc
    end
  end
end
local old = {}
local quiet = 0
if #names > 0 and mode ~= 'tombstone' then old = redis.call('HMGET', KEYS[1], unpack(names)) end
for j = 1, #names do
  local f = names[j]
  local v = values[j]
  local o = old[j]
  if o ~= v then
    set[#set + 1] = f
    set[#set + 1] = v
    if f == 'audience_rules' then
      quiet = quiet + 1 -- internal bookkeeping: stored, not a change of the profile (no entry, no version)
    else
      changed[f] = v
      n = n + 1
    end
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
  if quiet > 0 then redis.call('HSET', KEYS[1], unpack(set)) elseif mode ~= 'patch' then redis.call('HSET', KEYS[1], 'seq', ARGV[1]) end
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
