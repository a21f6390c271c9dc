-- Send a finished request's notification again, now, as a new event (a new
-- webhook-id, so a receiver that deduplicates still takes it).
-- ARGV: rid now
local rid, now = ARGV[1], ARGV[2]
local status = field(rid, 'status')
if not field(rid, 'notify_url') then return 'no_url' end
if status ~= 'completed' and status ~= 'failed' and status ~= 'expired' then return 'not_finished' end
queue_notification(rid, now)
return 'queued'
