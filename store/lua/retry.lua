-- Retry one failed or expired request as a new one (prelude's retry_request), at most once:
-- two retries at the same time make one new request, the second answered with it.
-- ARGV: rid new_rid tenant now ring_id stale_before
local rid, new_rid, tenant = ARGV[1], ARGV[2], ARGV[3]
local now = ARGV[4]                  -- ms with three decimals, as a submission's
local ring_id = ARGV[5]              -- a drain job to register if none is alive
local stale_before = ARGV[6]         -- drainers without a heartbeat since then are dead
local outcome = retry_request(rid, new_rid, tenant, now)
if outcome == 'created' then return {outcome, ring(ring_id, now, stale_before)} end
return {outcome, field(rid, 'retried_as') or field(rid, 'status') or ''}
