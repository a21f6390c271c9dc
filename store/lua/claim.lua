-- A drain job takes queued requests, leasing them: up to the number it asks
-- for of each API class, and renews the leases of those it still has in flight.
-- Each request taken is marked with this claim's id: only the holder of that claim
-- may send or settle it (a request taken back and claimed again has a new one).
-- ARGV: drainer_id wanted now lease_until stale_before max_drainers ring_id may_leave claim_id [renew...]
local drainer_id, wanted, now, lease_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stale_before = ARGV[5]            -- heartbeats older than this are dead drain jobs
local max_drainers = tonumber(ARGV[6])
local ring_id = ARGV[7]                 -- the drain job to register if more are wanted
local may_leave = ARGV[8] == '1'        -- nothing in flight: an empty claim ends this drain job
local claim_id = ARGV[9]
local renew = {select(10, unpack(ARGV))}  -- request ids still in flight, whose leases to renew
local drainers, leases = P .. 'drainers', P .. 'leases'
redis.call('ZADD', drainers, now, drainer_id)
for _, rid in ipairs(renew) do redis.call('ZADD', leases, 'XX', lease_until, rid) end
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'retry', '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', P .. 'retry', rid)
  requeue(rid)
end
local claimed = {}
-- wanted: "class=n,class=n"
for class, n in string.gmatch(wanted, '([%w_]+)=(%d+)') do
  local taken = 0
  while taken < tonumber(n) do
    local rid = redis.call('LPOP', outbox(class))
    if not rid then break end
    local r = load(rid)
    if r and r.status == 'queued' then
      redis.call('ZADD', leases, lease_until, rid)
      update(rid, {drainer = drainer_id, claim_id = claim_id})
      table.insert(claimed, cjson.encode({rid = rid, method = r.method, path = r.path, params = r.params,
        callback_method = r.callback_method, attempts = tonumber(r.attempts) or 0, timeout = tonumber(r.timeout),
        api_class = class}))
      taken = taken + 1
    end
  end
end
if #claimed == 0 and may_leave then
  redis.call('ZREM', drainers, drainer_id)
  return {'leave', ''}
end
local rung = ''
if outbox_length() > 0 then
  redis.call('ZREMRANGEBYSCORE', drainers, '-inf', stale_before)
  if redis.call('ZCARD', drainers) < max_drainers then
    redis.call('ZADD', drainers, now, ring_id)
    rung = ring_id
  end
end
local answer = {'ok', rung}
for _, item in ipairs(claimed) do table.insert(answer, item) end
return answer
