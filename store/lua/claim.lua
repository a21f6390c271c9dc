-- A drain job takes queued requests, leasing them: up to the number it asks
-- for of each API class, and renews the leases of those it still has in flight.
-- Each request taken is marked with this claim's id: only the holder of that claim
-- may send or settle it (a request taken back and claimed again has a new one).
-- ARGV: drainer_id wanted now lease_until stale_before max_drainers ring_id may_leave claim_id renew...
--   wanted: "class=n,class=n"
local drainer, now, lease_until, claim_id = ARGV[1], ARGV[3], ARGV[4], ARGV[9]
local drainers, leases = P .. 'drainers', P .. 'leases'
redis.call('ZADD', drainers, now, drainer)
for i = 10, #ARGV do redis.call('ZADD', leases, 'XX', lease_until, ARGV[i]) end
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', P .. 'retry', rid)
  requeue(rid)
end
local claimed = {}
for class, n in string.gmatch(ARGV[2], '([%w_]+)=(%d+)') do
  local taken = 0
  while taken < tonumber(n) do
    local rid = redis.call('LPOP', outbox(class))
    if not rid then break end
    local r = load(rid)
    if r and r.status == 'queued' then
      redis.call('ZADD', leases, lease_until, rid)
      update(rid, {drainer = drainer, claim_id = claim_id})
      table.insert(claimed, cjson.encode({rid = rid, method = r.method, path = r.path, params = r.params,
        callback_method = r.callback_method, attempts = tonumber(r.attempts) or 0, timeout = tonumber(r.timeout),
        api_class = class}))
      taken = taken + 1
    end
  end
end
if #claimed == 0 and ARGV[8] == '1' then
  redis.call('ZREM', drainers, drainer)
  return {'leave', ''}
end
local ring_id = ''
if outbox_length() > 0 then
  redis.call('ZREMRANGEBYSCORE', drainers, '-inf', ARGV[5])
  if redis.call('ZCARD', drainers) < tonumber(ARGV[6]) then
    redis.call('ZADD', drainers, now, ARGV[7])
    ring_id = ARGV[7]
  end
end
local answer = {'ok', ring_id}
for _, item in ipairs(claimed) do table.insert(answer, item) end
return answer
