-- Shared by every script: key names and the steps several scripts take.
-- `P` (the key prefix) is defined by the loader in store/scripts.py.

local function rkey(rid) return P .. 'req:' .. rid end

-- A record is a small hash (every value short, so Redis keeps it as a compact
-- ziplist/listpack) and, beside it, one string packing its long values with
-- cmsgpack in this order. A long value in the hash would turn all of it into a
-- hashtable, several times larger.
local PAYLOAD = {'params', 'response', 'error'}
local function payload_key(rid) return rkey(rid) .. ':payload' end

local function payload(rid)
  local raw = redis.call('GET', payload_key(rid))
  return raw and cmsgpack.unpack(raw) or {'', '', ''}
end

local function set_payload(rid, name, value)
  local values = payload(rid)
  for i, n in ipairs(PAYLOAD) do if n == name then values[i] = value end end
  redis.call('SET', payload_key(rid), cmsgpack.pack(values))
end

-- Deliveries other than the one that became `response` (kept in the record's
-- delivery_* fields): `digest .. ' ' .. delivery`.
local function dkey(rid) return rkey(rid) .. ':deliveries' end

-- The record as the client reads it, as HGETALL pairs: the hash, its long values,
-- and what the layout implies (its id, its number of deliveries).
local function read_record(rid)
  local fields = redis.call('HGETALL', rkey(rid))
  if #fields == 0 then return fields end
  local n = redis.call('LLEN', dkey(rid))
  for i = 1, #fields, 2 do
    if fields[i] == 'delivery_at' then n = n + 1 end
  end
  for i, value in ipairs(payload(rid)) do
    if value ~= '' then table.insert(fields, PAYLOAD[i]); table.insert(fields, value) end
  end
  for _, v in ipairs({'request_id', rid, 'deliveries', n}) do table.insert(fields, v) end
  return fields
end

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

-- Lists of deliveries (a request's, an orphan's) prefix each entry with its digest.
local function listed(key, digest)
  local prefix = digest .. ' '
  for _, entry in ipairs(redis.call('LRANGE', key, 0, -1)) do
    if string.sub(entry, 1, #prefix) == prefix then return true end
  end
  return false
end

local function known_delivery(rid, digest)
  return redis.call('HGET', rkey(rid), 'delivery_digest') == digest or listed(dkey(rid), digest)
end

-- One callback delivery for a known request. Returns the outcome. The delivery
-- that completes the request is kept once, as its `response`; others in the list.
local function apply_delivery(rid, api_id, method, delivery, body, digest, now, ttl)
  local k = rkey(rid)
  if known_delivery(rid, digest) then return 'duplicate' end
  if api_id ~= '' then index_api_id(rid, api_id) end
  local status = redis.call('HGET', k, 'status')
  if status == 'completed' or redis.call('HGET', k, 'api_id') ~= api_id then
    redis.call('RPUSH', dkey(rid), digest .. ' ' .. delivery)
  else
    redis.call('HSET', k, 'delivery_at', now, 'delivery_method', method, 'delivery_digest', digest)
  end
  if status == 'completed' then return 'matched' end
  local outcome = 'matched'
  if status == 'expired' then
    outcome = 'late'
    redis.call('HSET', k, 'late', '1')
  end
  set_payload(rid, 'response', body)
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

-- One upstream send asks for its turn. A sliding log per (account, API class):
-- at most `limit` sends in any `window_ms`, over every worker on every machine,
-- timed by Redis's own clock; and turns spaced `window_ms / limit` apart, so
-- sends go out evenly, not in bursts that network jitter could squeeze into
-- one window at the upstream. A pause (after a 429) holds everyone back.
-- Answers 0 (the turn is taken: go now) or the milliseconds to wait before asking again.
local function rate_turn(key, limit, window, member, waited)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local pause = redis.call('PTTL', key .. ':pause')
  if pause > 0 then return pause end
  local spacing = math.floor(window / limit)
  local last = tonumber(redis.call('GET', key .. ':last') or '0')
  if now < last + spacing then return last + spacing - now end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + window - now)
  end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window * 2)
  redis.call('SET', key .. ':last', now, 'PX', window * 2)
  local most = tonumber(redis.call('HGET', P .. 'metrics', 'ratelimit_wait_max_ms') or '0')
  if waited > most then redis.call('HSET', P .. 'metrics', 'ratelimit_wait_max_ms', waited) end
  if waited > 0 then redis.call('HINCRBY', P .. 'metrics', 'ratelimit_waits', 1) end
  return 0
end
