-- The worker's verdict on one send attempt of a `sending` request:
--   completed  (a synchronous 2xx answer; value = the response body)
--   failed     (value = the error)
--   retry      (value = the error; due = when to send again)
--   unknown    (maybe acted upstream, never resent: pending until the deadline)
-- Only the claim that holds the request may settle it (also when its `sending` mark
-- was lost in a failover: prelude's sent_by).
-- ARGV: rid verdict value now ttl due deadline claim_id
local rid, verdict, value, now, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local due = ARGV[6]                     -- retry: when to send again (ms)
local deadline = ARGV[7]                -- unknown: until when its callback may still come (ms)
local claim_id = ARGV[8]
if not sent_by(rid, claim_id, now) then return 0 end
redis.call('ZREM', P .. 'leases', rid)
update(rid, {drainer = false, claim_id = false})
count('sends_' .. verdict)
-- An attempt that did not complete the request is an event (a completing one is read from the record).
if verdict ~= 'completed' then
  local ok, e = pcall(cjson.decode, value)
  if not ok or type(e) ~= 'table' then e = {} end
  local sent_at = tonumber(field(rid, 'sent_at'))
  add_event(rid, sent_at or now, {event = 'sent', attempt = tonumber(field(rid, 'attempts')),
    upstream_status = tonumber(e.status), error = type(e.exception) == 'string' and e.exception or nil,
    latency_ms = sent_at and math.max(0, now - sent_at) or nil,
    outcome = verdict})
end
if verdict == 'completed' then
  update(rid, {response = value})
  move_status(rid, 'completed')
  finish(rid, now, ttl)
elseif verdict == 'failed' then
  update(rid, {error = value})
  move_status(rid, 'failed')
  finish(rid, now, ttl)
elseif verdict == 'retry' then
  update(rid, {error = value})
  move_status(rid, 'queued')
  redis.call('ZADD', P .. 'retry', due, rid)
else
  update(rid, {error = value, deadline = deadline})
  move_status(rid, 'pending')
  redis.call('ZADD', P .. 'deadlines', deadline, rid)
end
return 1
