-- Give a destination's sync lease back, only if this consumer still holds it.
-- KEYS[1] lease key; ARGV[1] consumer name
-- Returns 1 released, 0 not held by this consumer.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
