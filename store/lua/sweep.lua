-- The periodic sweep: expire overdue requests, recover requests whose drain
-- job died, purge finished ones past their keep time, and ring a drain job
-- when work waits with none alive.
-- ARGV: now limit ttl ring_id stale_before
local now, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local counts = {0, 0, 0}

for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', P .. 'deadlines', rid)
  local status = redis.call('HGET', rkey(rid), 'status')
  if status == 'pending' or status == 'sending' then
    move_status(rid, 'expired')
    finish(rid, now, ttl)
    counts[1] = counts[1] + 1
  end
end

for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', P .. 'leases', rid)
  local k = rkey(rid)
  local f = redis.call('HMGET', k, 'status', 'method', 'sent_at', 'timeout')
  if f[1] == 'queued' then
    requeue(rid)
  elseif f[1] == 'sending' and f[2] == 'POST' then
    local deadline = tonumber(f[3]) + tonumber(f[4]) * 1000
    redis.call('HSET', k, 'deadline', deadline)
    set_payload(rid, 'error', cjson.encode({reason = 'the worker stopped after sending; a POST is never sent twice'}))
    move_status(rid, 'pending')
    redis.call('ZADD', P .. 'deadlines', deadline, rid)
  elseif f[1] == 'sending' then
    move_status(rid, 'queued')
    requeue(rid)
  end
  counts[2] = counts[2] + 1
end

for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'purge', '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', P .. 'purge', rid)
  local k = rkey(rid)
  local f = redis.call('HMGET', k, 'tenant', 'status', 'api_id')
  if f[1] then
    redis.call('ZREM', tkey(f[1]), rid)
    redis.call('ZREM', tkey(f[1], f[2]), rid)
  end
  if f[3] and f[3] ~= '' and redis.call('GET', P .. 'api:' .. f[3]) == rid then
    redis.call('DEL', P .. 'api:' .. f[3])
  end
  redis.call('ZREM', P .. 'notify:due', rid)
  redis.call('DEL', k, payload_key(rid), dkey(rid), k .. ':notifications')
  counts[3] = counts[3] + 1
end

local rung = ''
if outbox_length() > 0 or
   redis.call('ZCOUNT', P .. 'retry', '-inf', now) > 0 then
  rung = ring(ARGV[4], now, ARGV[5])
end
return {counts[1], counts[2], counts[3], rung}
