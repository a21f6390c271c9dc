-- The periodic sweep: expire overdue requests (never sent, or no callback in time), recover requests whose drain
-- job died, purge finished ones past their keep time, and ring a drain job
-- when work waits with none alive.
-- ARGV: now limit ttl ring_id stale_before
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])         -- entries taken per timer in one pass
local ttl = tonumber(ARGV[3])           -- seconds a finished request is kept
local ring_id = ARGV[4]                 -- the drain job to start, if one is needed
local stale_before = tonumber(ARGV[5])  -- a drain job whose last heartbeat is older is dead
local counts = {0, 0, 0}

-- A deadline is a queued request's send-by time (prelude's send_by) or a pending one's
-- time for its callback. A request `sending` at its send-by time is in flight: its
-- send settles it (pending, with a deadline of its own, or final) or it goes back to
-- queued and expires on a later pass; its entry stays until then.
local NO_CALLBACK = cjson.encode({reason = 'no callback within callback_timeout'})
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', now, 'LIMIT', 0, limit)) do
  local status = field(rid, 'status')
  if status ~= 'sending' then redis.call('ZREM', P .. 'deadlines', rid) end
  if status == 'queued' then
    expire_unsent(rid, now, ttl)
    counts[1] = counts[1] + 1
  elseif status == 'pending' then
    if not field(rid, 'error') then update(rid, {error = NO_CALLBACK}) end
    move_status(rid, 'expired')
    finish(rid, now, ttl)
    counts[1] = counts[1] + 1
  end
end

-- A claimed request is taken back when its lease ran out, or at once when the drain
-- job holding it stopped heart-beating (gone from the drainers, or stale there).
local function holder_dead(r)
  local beat = r.drainer and redis.call('ZSCORE', P .. 'drainers', r.drainer)
  return not beat or tonumber(beat) < stale_before
end

local leased = redis.call('ZRANGE', P .. 'leases', 0, limit - 1, 'WITHSCORES')
for i = 1, #leased, 2 do
  local rid = leased[i]
  local r = load(rid) or {}
  if tonumber(leased[i + 1]) <= now or holder_dead(r) then
    redis.call('ZREM', P .. 'leases', rid)
    if r.status then update(rid, {drainer = false, claim_id = false}) end
    if r.status == 'sending' then  -- the attempt's answer, if any, is lost with its worker
      add_event(rid, r.sent_at or now, {event = 'sent', attempt = tonumber(r.attempts), error = 'worker stopped',
        outcome = r.method == 'POST' and 'unknown' or 'retry'})
    end
    if r.status == 'queued' then
      requeue(rid)
    elseif r.status == 'sending' and r.method == 'POST' then
      local deadline = tonumber(r.sent_at) + tonumber(r.timeout) * 1000
      update(rid, {deadline = deadline,
        error = cjson.encode({reason = 'the worker stopped after sending; a POST is never sent twice'})})
      move_status(rid, 'pending')
      redis.call('ZADD', P .. 'deadlines', deadline, rid)
    elseif r.status == 'sending' then
      move_status(rid, 'queued')
      requeue(rid)
    end
    counts[2] = counts[2] + 1
  end
end

-- A request finished again (a late callback after expiry) is in a later bucket
-- too; one kept longer than this `ttl` (it was raised) is rescheduled.
local function purge(rid)
  local r = load(rid)
  if not r then return end
  local due = tonumber(r.completed_at) + ttl * 1000
  if due > now then return schedule_purge(rid, due) end
  unfile_request(rid, r)
  if r.api_id and redis.call('GET', P .. 'api:' .. r.api_id) == rid then
    redis.call('DEL', P .. 'api:' .. r.api_id)
  end
  delete_record(rid)
  counts[3] = counts[3] + 1
end

local bucket = tonumber(redis.call('GET', P .. 'purge:next'))
local steps = 0
while bucket and bucket < purge_bucket(now) and steps < limit do
  local taken = redis.call('LPOP', P .. 'purge:' .. bucket, limit)
  for _, rid in ipairs(taken or {}) do purge(rid) end
  steps = steps + (taken and #taken or 0) + 1
  if redis.call('EXISTS', P .. 'purge:' .. bucket) == 0 then bucket = bucket + 1 end
end
if bucket then redis.call('SET', P .. 'purge:next', bucket) end

-- A drain job that stopped heart-beating leaves the drainers whether or not there is work:
-- the drainers gauge must not count a dead one (ring below would drop it only for work).
redis.call('ZREMRANGEBYSCORE', P .. 'drainers', '-inf', stale_before)
local rung = ''
if outbox_length() > 0 or
   redis.call('ZCOUNT', P .. 'retry', '-inf', now) > 0 then
  rung = ring(ring_id, now, stale_before)
end
return {counts[1], counts[2], counts[3], rung}
