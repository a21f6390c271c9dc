-- A drain job takes up to n queued requests, leasing them, and renews the
-- leases of those it still has in flight.
-- ARGV: drainer_id n now lease_until stale_before max_drainers spawn_id may_leave renew...
local drainer, n, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local drainers, outbox, leases = P .. 'drainers', P .. 'outbox', P .. 'leases'
redis.call('ZADD', drainers, now, drainer)
for i = 9, #ARGV do redis.call('ZADD', leases, 'XX', lease_until, ARGV[i]) end
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', P .. 'retry', rid)
  redis.call('RPUSH', outbox, rid)
end
local claimed = {}
while #claimed < n do
  local rid = redis.call('LPOP', outbox)
  if not rid then break end
  local f = redis.call('HMGET', rkey(rid), 'status', 'method', 'path', 'params', 'callback_method', 'attempts', 'timeout')
  if f[1] == 'queued' then
    redis.call('ZADD', leases, lease_until, rid)
    table.insert(claimed, cjson.encode({rid = rid, method = f[2], path = f[3], params = f[4],
      callback_method = f[5], attempts = tonumber(f[6]), timeout = tonumber(f[7])}))
  end
end
if #claimed == 0 and ARGV[8] == '1' then
  redis.call('ZREM', drainers, drainer)
  return {'leave', ''}
end
local spawn = ''
if redis.call('LLEN', outbox) > 0 then
  redis.call('ZREMRANGEBYSCORE', drainers, '-inf', ARGV[5])
  if redis.call('ZCARD', drainers) < tonumber(ARGV[6]) then
    redis.call('ZADD', drainers, now, ARGV[7])
    spawn = ARGV[7]
  end
end
local answer = {'ok', spawn}
for _, item in ipairs(claimed) do table.insert(answer, item) end
return answer
