-- KEYS[1] dead-letter stream, KEYS[2] high-water-mark hash
-- ARGV[1] source partition, ARGV[2] position major, ARGV[3] position minor, ARGV[4] MAXLEN,
-- ARGV[5..] entry field, value pairs (built by liveprofile.store.scripts.dead_letter_argv)
-- Returns a DeadLetterResult: 1 written, 0 already written (at or below the high-water mark)
local hwm = redis.call('HGET', KEYS[2], ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
if hwm then
  local sep = string.find(hwm, '-', 1, true)
  local ha = tonumber(string.sub(hwm, 1, sep - 1))
  local hb = tonumber(string.sub(hwm, sep + 1))
  if a < ha or (a == ha and b <= hb) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '-' .. ARGV[3])
local entry = {}
for i = 5, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
return 1
