-- Just before the request leaves: only a queued, leased request may be sent.
-- ARGV: rid now
local k = rkey(ARGV[1])
if redis.call('HGET', k, 'status') ~= 'queued' then return 0 end
move_status(ARGV[1], 'sending')
redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'sent_at', ARGV[2])
return 1
