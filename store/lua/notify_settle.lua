-- The outcome of one notification attempt, kept in the request's attempt log
-- (the newest `keep` entries). It moves the notification on only while it is the
-- request's current event (a newer event or a replay supersedes it) and not
-- delivered already.
--   delivered | retry (due again at next_due) | failed, refused (final)
-- ARGV: rid event outcome now next_due attempt error_text keep
local rid, event, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local next_due = ARGV[5]        -- ms, when outcome is retry
local attempt = ARGV[6]         -- the attempt's log entry, JSON
local error_text = ARGV[7]      -- why it was not delivered
local keep = tonumber(ARGV[8])  -- log entries kept, newest
local k = rkey(rid)
count('notify_' .. outcome)
local r = load(rid)
if outcome == 'failed' or outcome == 'refused' then series_add(r and r.tenant, now, 'n') end
if not r then return 0 end
redis.call('RPUSH', k .. ':notifications', attempt)
redis.call('LTRIM', k .. ':notifications', -keep, -1)
if r.notify_event ~= event or r.notify_status == 'delivered' then return 0 end
update(rid, {notify_attempts = (tonumber(r.notify_attempts) or 0) + 1})
if outcome == 'delivered' then
  update(rid, {notify_status = 'delivered', notify_delivered_at = now})
  unschedule_notification(rid, r.notify_host)
  return 1
end
update(rid, {notify_error = error_text})
if outcome == 'retry' then
  schedule_notification(rid, r.notify_host, next_due)
else
  update(rid, {notify_status = 'failed'})
  unschedule_notification(rid, r.notify_host)
end
return 1
