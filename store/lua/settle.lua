-- The worker's verdict on one send attempt of a `sending` request:
--   completed  (a synchronous 2xx answer; value = the response body)
--   failed     (value = the error)
--   retry      (value = the error; due = when to send again)
--   unknown    (maybe acted upstream, never resent: pending until the deadline)
-- ARGV: rid verdict value now ttl due deadline
local rid, verdict, value, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('ZREM', P .. 'leases', rid)
if field(rid, 'status') ~= 'sending' then return 0 end
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
