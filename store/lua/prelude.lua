-- Shared by every script: key names and the steps several scripts take.
-- `P` (the key prefix) is defined by the loader in store/scripts.py.

local function rkey(rid) return P .. 'req:' .. rid end

-- A record is one string: cmsgpack's array of RECORD_VERSION, then its fields'
-- values in the order of FIELDS (false where a field is unset; both defined by the
-- loader from store/record_format.py, which says how versions change). One key per
-- request, no field names stored, and params or a response of any length cost no
-- more than their own bytes (a hash turns into a hashtable, several times larger,
-- once any value passes 64 bytes). Scripts read a record once (`load`), change it
-- (`update`), and the loader writes each changed record once when the script ends
-- (`flush`); the client reads it as HGETALL-style pairs (`read_record`).
-- `drainer` and `claim_id`: the drain job and the claim holding a queued or sending
-- request; only that claim may send or settle it.

-- A record's fields by name. Version 0 (before the version element) starts with the
-- tenant, a string: its fields are read from the first element on. A newer version
-- than this code's is refused: written back, it would lose the fields this code does
-- not know.
local function unpack_record(rid, raw)
  local values = cmsgpack.unpack(raw)
  local first = 1
  if type(values[1]) == 'number' then
    if values[1] > RECORD_VERSION then
      error('record ' .. rkey(rid) .. ' has format version ' .. values[1] ..
        '; this code reads versions 0 to ' .. RECORD_VERSION .. ' (store/record_format.py)', 0)
    end
    first = 2
  end
  local r = {}
  for i = first, #values do
    if values[i] then r[FIELDS[i - first + 1]] = values[i] end
  end
  return r
end

local records = {}   -- what this run of the script has read, by request id
local changed = {}   -- request ids to write back, in the order first changed
local is_changed = {}

local function load(rid)
  if records[rid] == nil then
    local raw = redis.call('GET', rkey(rid))
    records[rid] = raw and unpack_record(rid, raw) or false
  end
  return records[rid] or nil
end

local function field(rid, name)
  local r = load(rid)
  return r and r[name]
end

local function update(rid, changes)
  local r = load(rid) or {}
  for name, value in pairs(changes) do r[name] = value and tostring(value) or nil end
  if not is_changed[rid] then
    is_changed[rid] = true
    table.insert(changed, rid)
  end
  records[rid] = r
end

local function flush()
  for _, rid in ipairs(changed) do
    local r = records[rid]
    if r then
      local values = {RECORD_VERSION}
      for i, name in ipairs(FIELDS) do values[i + 1] = r[name] or false end
      redis.call('SET', rkey(rid), cmsgpack.pack(values))
    end
  end
end

-- Deliveries other than the one kept as the record's response (its delivery_* fields):
-- each `digest .. ' ' .. delivery`.
local function dkey(rid) return rkey(rid) .. ':deliveries' end

-- Notifications still to send, each in `notify:pending` (request id -> when due, ms:
-- the gauges) and in its host's queue; `notify:hosts` holds every host with a
-- queue, scored no later than the queue's earliest due time, so a claim
-- (lua/notify_claim.lua) finds the hosts with something due without looking at
-- what they have queued.
local function notify_queue(host) return P .. 'notify:host:' .. host end

local function schedule_notification(rid, host, at)
  redis.call('ZADD', P .. 'notify:pending', at, rid)
  redis.call('ZADD', notify_queue(host), at, rid)
  redis.call('ZADD', P .. 'notify:hosts', 'LT', at, host)
end

local function unschedule_notification(rid, host)
  redis.call('ZREM', P .. 'notify:due', rid)   -- as left by a version without host queues
  if redis.call('ZREM', P .. 'notify:pending', rid) == 0 or not host then return end
  redis.call('ZREM', notify_queue(host), rid)
  if redis.call('EXISTS', notify_queue(host)) == 0 then redis.call('ZREM', P .. 'notify:hosts', host) end
end

-- A request's events beyond what its record and its lists tell (store/events.py reads them):
-- a failed send attempt, a callback answered other than `matched`, an expiry a late callback
-- overturned. The newest EVENTS_KEPT, each `n json`: n counts every event the request ever had,
-- so a reader knows how many were dropped. The happy path writes none.
local EVENTS_KEPT = 50
local function ekey(rid) return rkey(rid) .. ':events' end

local function add_event(rid, at, event)
  local key = ekey(rid)
  local last = redis.call('LINDEX', key, -1)
  local n = (last and tonumber(string.match(last, '^%d+')) or 0) + 1
  event.at = tostring(at)
  redis.call('RPUSH', key, n .. ' ' .. cjson.encode(event))
  if n > EVENTS_KEPT then redis.call('LTRIM', key, -EVENTS_KEPT, -1) end
end

-- A callback delivery of a known request answered other than `matched` (duplicate, late, early,
-- refused). `digest` tells which stored delivery a late or early one is.
local function callback_event(rid, verdict, at, method, signature, size, digest)
  add_event(rid, at, {event = 'callback', verdict = verdict, method = method,
    signature = signature ~= '' and signature or nil, size = size, d = digest})
end

-- A refused callback that names a known request (`rid`; '' names none) is one of its events;
-- answers that request's tenant (nil: it names none).
local function refused_event(rid, at, method, signature, size, reason)
  local tenant = rid ~= '' and field(rid, 'tenant') or nil  -- every record has one
  if tenant then
    add_event(rid, at, {event = 'callback', verdict = 'refused', method = method,
      signature = signature ~= '' and signature or nil, size = size, reason = reason})
  end
  return tenant
end

-- The record and what hangs on it: its other deliveries, its notification
-- attempts, its events and any notification still due.
local function delete_record(rid)
  unschedule_notification(rid, field(rid, 'notify_host'))
  redis.call('DEL', rkey(rid), dkey(rid), rkey(rid) .. ':notifications', ekey(rid))
  records[rid] = false
end

-- The record as the client reads it, as HGETALL-style pairs, with what the layout
-- implies: its id and its number of deliveries.
local function read_record(rid)
  local r = load(rid)
  if not r then return {} end
  local pairs_ = {'request_id', rid}
  for _, name in ipairs(FIELDS) do
    if r[name] then table.insert(pairs_, name); table.insert(pairs_, r[name]) end
  end
  local n = redis.call('LLEN', dkey(rid)) + (r.delivery_at and 1 or 0)
  table.insert(pairs_, 'deliveries'); table.insert(pairs_, tostring(n))
  return pairs_
end

local function count(name) redis.call('HINCRBY', P .. 'metrics', name, 1) end

-- One request duration (seconds) in the request histogram (REQUEST_BUCKETS, defined by
-- the loader from store/metrics.py, which reads it back): the count of its bucket
-- (not cumulative; #REQUEST_BUCKETS is +Inf) and the sum, under its final status.
local function observe_request(status, seconds)
  local slot = #REQUEST_BUCKETS
  for i, bound in ipairs(REQUEST_BUCKETS) do
    if seconds <= bound then slot = i - 1; break end
  end
  local field = REQUEST_HISTOGRAM .. status .. ':'
  redis.call('HINCRBY', P .. 'metrics', field .. slot, 1)
  redis.call('HINCRBYFLOAT', P .. 'metrics', field .. 'sum', seconds)
end

-- Figures over time (store/series.py, which reads them back): per scope (`t:` and a tenant
-- id, and `all`) one hash per SERIES_BLOCK minutes, kept SERIES_TTL seconds, whose fields are
-- the minute within the block and a figure: `3s` (submitted in the block's fourth minute), `3r`
-- (callbacks refused), `3n` (notifications failed), `3c7`, `3f7`, `3e7` (finished so, in log
-- bucket 7 of the time to result: one field counts both), `3w7` (webhook latencies, bucket 7).
-- Small hashes stay listpacks (ziplists before Redis 7): a few bytes per field.
-- A new field (only ever written during its block's own minutes) sets the block's time to live.
local function series_add(tenant, at, figure, n)
  n = n or 1
  local minute = math.floor(tonumber(at) / 60000)
  local block, name = ':' .. math.floor(minute / SERIES_BLOCK), (minute % SERIES_BLOCK) .. figure
  local key = P .. 'series:all' .. block
  if redis.call('HINCRBY', key, name, n) == n then redis.call('EXPIRE', key, SERIES_TTL) end
  if not tenant then return end
  key = P .. 'series:t:' .. tenant .. block
  if redis.call('HINCRBY', key, name, n) == n then redis.call('EXPIRE', key, SERIES_TTL) end
end

-- The log bucket of a duration in ms, as store/series.py `slot` computes it: 0 below 1 ms, then
-- two per doubling (SERIES_SLOTS_PER_E per factor e, so that one natural log finds it)
-- (bucket k >= 1 holds [2^((k-1)/2), 2^(k/2)) ms), the last one holding everything longer.
local function series_slot(ms)
  if ms < 1 then return 0 end
  return math.min(SERIES_SLOTS - 1, math.floor(math.log(ms) * SERIES_SLOTS_PER_E) + 1)
end

-- One outbox per upstream API class (CLASSES, defined by the loader), so that
-- requests waiting for a scarce rate-limit turn cannot hold up the others.
local function outbox(class) return P .. 'outbox:' .. class end

local function requeue(rid)
  redis.call('RPUSH', outbox(field(rid, 'api_class') or CLASSES[1]), rid)
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

-- A tenant's requests to one upstream path in one status (keys.py's tenant_path_requests):
-- the listing's `path` filter pages one of them by time, or merges those of every status.
local function pkey(tenant, path, status)
  return P .. 'tenant:' .. tenant .. ':pst:' .. status .. ':' .. path
end

-- A request in the listing's three indexes (all, by status, by path and status), each
-- scored by its submission time; `unfile_request` takes it out of them.
local function file_request(rid, r)
  local at = r.submitted_at
  redis.call('ZADD', tkey(r.tenant), at, rid)
  redis.call('ZADD', tkey(r.tenant, r.status), at, rid)
  redis.call('ZADD', pkey(r.tenant, r.path, r.status), at, rid)
end

local function unfile_request(rid, r)
  redis.call('ZREM', tkey(r.tenant), rid)
  redis.call('ZREM', tkey(r.tenant, r.status), rid)
  redis.call('ZREM', pkey(r.tenant, r.path, r.status), rid)
end

local function move_status(rid, new)
  local r = load(rid)
  if r.status == new then return end
  redis.call('ZREM', tkey(r.tenant, r.status), rid)
  redis.call('ZADD', tkey(r.tenant, new), r.submitted_at, rid)
  redis.call('ZREM', pkey(r.tenant, r.path, r.status), rid)
  redis.call('ZADD', pkey(r.tenant, r.path, new), r.submitted_at, rid)
  update(rid, {status = new})
end

-- A request with a notify_url has a new notification event to send (its
-- webhook-id is the request id and the event number), due now.
local function queue_notification(rid, now)
  if not field(rid, 'notify_url') then return end
  update(rid, {notify_event = (tonumber(field(rid, 'notify_event')) or 0) + 1, notify_status = 'pending',
    notify_attempts = 0, notify_error = false, notify_delivered_at = false})
  schedule_notification(rid, field(rid, 'notify_host') or '', now)
end

-- Finished requests wait for deletion in lists, one per PURGE_BUCKET_MS of due
-- time: a list entry costs a third of a sorted-set member. The sweep empties the
-- buckets wholly in the past in order, from the one named by `purge:next`; a
-- request is deleted at most PURGE_BUCKET_MS (plus a sweep) after it is due.
local PURGE_BUCKET_MS = 10000
local function purge_bucket(at) return math.floor(at / PURGE_BUCKET_MS) end

local function schedule_purge(rid, at)
  local bucket = purge_bucket(at)
  redis.call('RPUSH', P .. 'purge:' .. bucket, rid)
  local first = tonumber(redis.call('GET', P .. 'purge:next'))
  if not first or bucket < first then redis.call('SET', P .. 'purge:next', bucket) end
end

-- The request reached a final status: stop every timer, keep it for `ttl`, wake
-- waiters, queue its notification.
local function finish(rid, now, ttl)
  update(rid, {completed_at = now})
  redis.call('ZREM', P .. 'deadlines', rid)
  redis.call('ZREM', P .. 'leases', rid)
  redis.call('ZREM', P .. 'retry', rid)
  schedule_purge(rid, now + ttl * 1000)
  redis.call('PUBLISH', P .. 'done', rid)
  count('finished_' .. field(rid, 'status'))
  local submitted = tonumber(field(rid, 'submitted_at'))
  if submitted then observe_request(field(rid, 'status'), math.max(0, now - submitted) / 1000) end
  local took = series_slot(math.max(0, now - (submitted or now)))
  series_add(field(rid, 'tenant'), now, string.sub(field(rid, 'status'), 1, 1) .. took)
  queue_notification(rid, now)
end

-- A request whose `callback_timeout` passed before it was sent is never sent: a call
-- placed that late is worse than none. Its send-by time, from its submission; a
-- request sent and taken back (a retry, a GET whose worker died) keeps it too.
local NOT_SENT = 'not sent within callback_timeout'
local function send_by(r)
  return tonumber(r.submitted_at) + tonumber(r.timeout) * 1000
end

local function expire_unsent(rid, now, ttl)
  local r = load(rid)
  local reason = {reason = NOT_SENT, attempts = tonumber(r.attempts) or 0}
  if r.error then
    local ok, last = pcall(cjson.decode, r.error)
    reason.last_error = ok and last or r.error
  end
  update(rid, {error = cjson.encode(reason), drainer = false, claim_id = false})
  move_status(rid, 'expired')
  finish(rid, now, ttl)
end

local function index_api_id(rid, api_id)
  local known = field(rid, 'api_id')
  if not known or known == '' then update(rid, {api_id = api_id}) end
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

-- The delivery kept as the response is the same one again when its api_id and
-- canonical body (what its digest is made of) are.
local function known_delivery(rid, api_id, body, digest)
  local r = load(rid)
  return (r.delivery_at and r.api_id == api_id and r.response == body) or listed(dkey(rid), digest)
end

-- One callback delivery for a known request. Returns the outcome. The delivery
-- that completes the request is kept once, as its `response`; others in the list.
local function apply_delivery(rid, api_id, method, delivery, body, digest, now, ttl)
  if known_delivery(rid, api_id, body, digest) then return 'duplicate' end
  if api_id ~= '' then index_api_id(rid, api_id) end
  local status = field(rid, 'status')
  if status == 'completed' or field(rid, 'api_id') ~= api_id then
    redis.call('RPUSH', dkey(rid), digest .. ' ' .. delivery)
    if status == 'completed' then return 'matched' end
    update(rid, {response = body})
  else
    update(rid, {delivery_at = now, delivery_method = method, response = body})
  end
  local outcome = 'matched'
  if status == 'expired' then
    outcome = 'late'
    local ok, last = pcall(cjson.decode, field(rid, 'error') or '')
    add_event(rid, field(rid, 'completed_at'), {event = 'expired', reason = ok and type(last) == 'table' and last.reason or nil})
    update(rid, {late = '1'})
  end
  move_status(rid, 'completed')
  finish(rid, now, ttl)
  return outcome
end

-- The verdict of a send comes from the claim that holds the request, normally `sending`.
-- `queued` under that claim means its send mark was lost (written to a primary that failed
-- over before a replica had it) though the request did leave: what mark_sending would have
-- written is written now, so the verdict settles it and the lease never sends it again.
local function sent_by(rid, claim_id, now)
  local r = load(rid)
  if not r or claim_id == '' or r.claim_id ~= claim_id then return false end
  if r.status == 'queued' then
    move_status(rid, 'sending')
    update(rid, {attempts = (tonumber(r.attempts) or 0) + 1, sent_at = now})
  end
  return r.status == 'sending'
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

-- `ring_id` if `ring` registered it and it is still a drainer ('' otherwise): a repeated
-- call answers the drain job the first one did (enqueueing it twice is harmless).
local function rung(ring_id)
  if redis.call('ZSCORE', P .. 'drainers', ring_id) then return ring_id end
  return ''
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

-- The quarantine of refused callbacks (store/quarantine.py): entry id -> when kept (ms), the
-- entries by id, and the bytes they count (each entry's length plus a fixed overhead); and,
-- among them, the ids and bytes of those whose rid named no request when kept (anyone can
-- send those: they are dropped before any other, quarantine_keep.lua).
local QUARANTINE, QUARANTINE_ENTRIES, QUARANTINE_BYTES = P .. 'quarantine', P .. 'quarantine:entries', P .. 'quarantine:bytes'
local QUARANTINE_UNKNOWN, QUARANTINE_UNKNOWN_BYTES = P .. 'quarantine:unknown', P .. 'quarantine:unknown:bytes'

-- Take one entry out of the quarantine; answers the bytes it counted (0: it was not there):
-- its length plus `overhead`, plus `unknown_overhead` for one naming no request.
local function quarantine_drop(id, overhead, unknown_overhead)
  local unknown = redis.call('ZREM', QUARANTINE_UNKNOWN, id)  -- first: a stray id goes too
  if redis.call('ZREM', QUARANTINE, id) == 0 then return 0 end
  local size = redis.call('HSTRLEN', QUARANTINE_ENTRIES, id) + overhead + (unknown == 1 and unknown_overhead or 0)
  redis.call('HDEL', QUARANTINE_ENTRIES, id)
  redis.call('DECRBY', QUARANTINE_BYTES, size)
  if unknown == 1 then redis.call('DECRBY', QUARANTINE_UNKNOWN_BYTES, size) end
  return size
end

-- A new request, queued: its record (`fields`: what the submission names), its send-by
-- time, its indexes and its place in its outbox.
local function create_request(rid, fields)
  fields.status = 'queued'
  update(rid, fields)
  local r = load(rid)
  -- Not sent by its callback_timeout: the sweep expires it (send_by). The record's
  -- `deadline` stays the callback's, set once the request is sent.
  redis.call('ZADD', P .. 'deadlines', send_by(r), rid)
  if r.notify_url then update(rid, {notify_status = 'pending'}) end
  file_request(rid, r)
  requeue(rid)
  count('submitted')
  series_add(r.tenant, r.submitted_at, 's')
end

-- Retry a failed or expired request of `tenant` as a new request `new_rid` submitted `now`:
-- the same method, path, params, callback method, timeout and notify URL, linked both ways
-- (retry_of, retried_as). Answers 'created', or why not: 'gone', 'retried' (it was already:
-- its retried_as names the retry), or 'status'.
local function retry_request(rid, new_rid, tenant, now)
  local r = load(rid)
  if not r or r.tenant ~= tenant then return 'gone' end
  if r.retried_as then return 'retried' end
  if r.status ~= 'failed' and r.status ~= 'expired' then return 'status' end
  create_request(new_rid, {tenant = tenant, method = r.method, path = r.path, params = r.params,
    callback_method = r.callback_method, submitted_at = now, timeout = r.timeout, api_class = r.api_class,
    notify_url = r.notify_url or false, notify_host = r.notify_host or false, retry_of = rid})
  update(rid, {retried_as = new_rid})
  return 'created'
end
