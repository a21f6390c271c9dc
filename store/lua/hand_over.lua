-- A drain job that has run its time leaves; another is rung if work remains.
-- ARGV: drainer_id now ring_id stale_before
redis.call('ZREM', P .. 'drainers', ARGV[1])
if outbox_length() == 0 then return '' end
return ring(ARGV[3], ARGV[2], ARGV[4])
