-- The outcome of one notification attempt, kept in the request's attempt log
-- (the newest `keep` entries). It moves the notification on only while it is the
-- request's current event (a newer event or a replay supersedes it) and not
-- delivered already.
--   delivered | retry (due again at next_due) | failed, refused (final)
-- ARGV: rid event outcome now next_due attempt error keep
local rid, event, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = rkey(rid)
count('notify_' .. outcome)
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('RPUSH', k .. ':notifications', ARGV[6])
redis.call('LTRIM', k .. ':notifications', -tonumber(ARGV[8]), -1)
local f = redis.call('HMGET', k, 'notify_event', 'notify_status')
if f[1] ~= event or f[2] == 'delivered' then return 0 end
redis.call('HINCRBY', k, 'notify_attempts', 1)
if outcome == 'delivered' then
  redis.call('HSET', k, 'notify_status', 'delivered', 'notify_delivered_at', now)
  redis.call('ZREM', P .. 'notify:due', rid)
  return 1
end
redis.call('HSET', k, 'notify_error', ARGV[7])
if outcome == 'retry' then
  redis.call('ZADD', P .. 'notify:due', ARGV[5], rid)
else
  redis.call('HSET', k, 'notify_status', 'failed')
  redis.call('ZREM', P .. 'notify:due', rid)
end
return 1
