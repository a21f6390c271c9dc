-- A drain job that has run its time leaves; another is rung if work remains.
-- ARGV: drainer_id now ring_id stale_before
local drainer_id, now, ring_id = ARGV[1], ARGV[2], ARGV[3]
local stale_before = ARGV[4]  -- a drain job whose last heartbeat is older is dead
redis.call('ZREM', P .. 'drainers', drainer_id)
if outbox_length() == 0 then return '' end
return ring(ring_id, now, stale_before)
