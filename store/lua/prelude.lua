-- Shared by every script: key names and the steps several scripts take.
-- `P` (the key prefix) is defined by the loader in store/scripts.py.

local function rkey(rid) return P .. 'req:' .. rid end

local function count(name) redis.call('HINCRBY', P .. 'metrics', name, 1) end

-- One outbox per upstream API class (CLASSES, defined by the loader), so that
-- requests waiting for a scarce rate-limit turn cannot hold up the others.
local function outbox(class) return P .. 'outbox:' .. class end

local function requeue(rid)
  redis.call('RPUSH', outbox(redis.call('HGET', rkey(rid), 'api_class') or CLASSES[1]), rid)
end

local function outbox_length()
  local n = 0
  for _, class in ipairs(CLASSES) do n = n + redis.call('LLEN', outbox(class)) end
  return n
end

local function tkey(tenant, status)
  if status then return P .. 'tenant:' .. tenant .. ':st:' .. status end
  return P .. 'tenant:' .. tenant .. ':all'
end

local function move_status(rid, new)
  local k = rkey(rid)
  local cur = redis.call('HMGET', k, 'status', 'tenant', 'submitted_at')
  if cur[1] == new then return end
  redis.call('ZREM', tkey(cur[2], cur[1]), rid)
  redis.call('ZADD', tkey(cur[2], new), cur[3], rid)
  redis.call('HSET', k, 'status', new)
end

-- A request with a notify_url has a new notification event to send (its
-- webhook-id is the request id and the event number), due now.
local function queue_notification(rid, now)
  local k = rkey(rid)
  if not redis.call('HGET', k, 'notify_url') then return end
  redis.call('HINCRBY', k, 'notify_event', 1)
  redis.call('HSET', k, 'notify_status', 'pending', 'notify_attempts', 0)
  redis.call('HDEL', k, 'notify_error', 'notify_delivered_at')
  redis.call('ZADD', P .. 'notify:due', now, rid)
end

-- The request reached a final status: stop every timer, keep it for `ttl`, wake
-- waiters, queue its notification.
local function finish(rid, now, ttl)
  local k = rkey(rid)
  redis.call('HSET', k, 'completed_at', now)
  redis.call('ZREM', P .. 'deadlines', rid)
  redis.call('ZREM', P .. 'leases', rid)
  redis.call('ZREM', P .. 'retry', rid)
  redis.call('ZADD', P .. 'purge', now + ttl * 1000, rid)
  redis.call('PUBLISH', P .. 'done', rid)
  count('finished_' .. redis.call('HGET', k, 'status'))
  queue_notification(rid, now)
end

local function index_api_id(rid, api_id)
  local k = rkey(rid)
  local known = redis.call('HGET', k, 'api_id')
  if not known or known == '' then redis.call('HSET', k, 'api_id', api_id) end
  redis.call('SET', P .. 'api:' .. api_id, rid)
end

-- One callback delivery for a known request. Returns the outcome.
local function apply_delivery(rid, api_id, delivery, body, digest, now, ttl)
  local k = rkey(rid)
  if redis.call('SADD', k .. ':digests', digest) == 0 then return 'duplicate' end
  redis.call('RPUSH', k .. ':deliveries', delivery)
  redis.call('HINCRBY', k, 'deliveries', 1)
  if api_id ~= '' then index_api_id(rid, api_id) end
  local status = redis.call('HGET', k, 'status')
  if status == 'completed' then return 'matched' end
  local outcome = 'matched'
  if status == 'expired' then
    outcome = 'late'
    redis.call('HSET', k, 'late', '1')
  end
  redis.call('HSET', k, 'response', body)
  move_status(rid, 'completed')
  finish(rid, now, ttl)
  return outcome
end

-- Make sure some drain job will look at the outbox: register `ring_id` as a
-- drainer when none is alive and return it (the caller enqueues that job).
local function ring(ring_id, now, stale_before)
  local drainers = P .. 'drainers'
  redis.call('ZREMRANGEBYSCORE', drainers, '-inf', stale_before)
  if redis.call('ZCARD', drainers) > 0 then return '' end
  redis.call('ZADD', drainers, now, ring_id)
  return ring_id
end
