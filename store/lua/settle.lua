-- The worker's verdict on one send attempt of a `sending` request:
--   completed  (a synchronous 2xx answer; value = the response body)
--   failed     (value = the error)
--   retry      (value = the error; due = when to send again)
--   unknown    (maybe acted upstream, never resent: pending until the deadline)
-- Only the claim that holds the request may settle it.
-- ARGV: rid verdict value now ttl due deadline claim_id
local rid, verdict, value, now, claim_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[8]
local r = load(rid)
if not r or r.status ~= 'sending' or r.claim_id ~= claim_id then return 0 end
redis.call('ZREM', P .. 'leases', rid)
update(rid, {drainer = false, claim_id = false})
count('sends_' .. verdict)
if verdict == 'completed' then
  update(rid, {response = value})
  move_status(rid, 'completed')
  finish(rid, tonumber(now), tonumber(ARGV[5]))
elseif verdict == 'failed' then
  update(rid, {error = value})
  move_status(rid, 'failed')
  finish(rid, tonumber(now), tonumber(ARGV[5]))
elseif verdict == 'retry' then
  update(rid, {error = value})
  move_status(rid, 'queued')
  redis.call('ZADD', P .. 'retry', ARGV[6], rid)
else
  update(rid, {error = value, deadline = ARGV[7]})
  move_status(rid, 'pending')
  redis.call('ZADD', P .. 'deadlines', ARGV[7], rid)
end
return 1
