-- Send a finished request's notification again, now, as a new event (a new
-- webhook-id, so a receiver that deduplicates still takes it).
-- ARGV: rid now
local rid = ARGV[1]
local f = redis.call('HMGET', rkey(rid), 'status', 'notify_url')
if not f[2] then return 'no_url' end
if f[1] ~= 'completed' and f[1] ~= 'failed' and f[1] ~= 'expired' then return 'not_finished' end
queue_notification(rid, ARGV[2])
return 'queued'
