-- The outcome of one notification attempt, kept in the request's attempt log
-- (the newest `keep` entries). It moves the notification on only while it is the
-- request's current event (a newer event or a replay supersedes it) and not
-- delivered already.
--   delivered | retry (due again at next_due) | failed, refused (final)
-- ARGV: rid event outcome now next_due attempt error keep
local rid, event, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = rkey(rid)
count('notify_' .. outcome)
local r = load(rid)
if not r then return 0 end
redis.call('RPUSH', k .. ':notifications', ARGV[6])
redis.call('LTRIM', k .. ':notifications', -tonumber(ARGV[8]), -1)
if r.notify_event ~= event or r.notify_status == 'delivered' then return 0 end
update(rid, {notify_attempts = (tonumber(r.notify_attempts) or 0) + 1})
if outcome == 'delivered' then
  update(rid, {notify_status = 'delivered', notify_delivered_at = now})
  redis.call('ZREM', P .. 'notify:due', rid)
  return 1
end
update(rid, {notify_error = ARGV[7]})
if outcome == 'retry' then
  redis.call('ZADD', P .. 'notify:due', ARGV[5], rid)
else
  update(rid, {notify_status = 'failed'})
  redis.call('ZREM', P .. 'notify:due', rid)
end
return 1
