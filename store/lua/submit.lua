-- A new request: the record, its indexes and its place in the outbox, all at once.
-- ARGV: rid tenant method path params callback_method now timeout idem_key idem_value idem_ttl ring_id stale_before api_class notify_url notify_host idempotency_key [alias_idem_key...]
local rid, tenant, method, path = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local params = ARGV[5]                 -- JSON, sorted keys
local callback_method = ARGV[6]
local now = ARGV[7]                    -- ms with three decimals: the listing indexes order by it
local timeout = ARGV[8]                -- seconds to wait for the callback once sent
local idem_key = ARGV[9]               -- the Idempotency-Key's key; '' without one
local idem_value = ARGV[10]            -- 'rid body_digest': what a repeat is answered and checked with
local idem_ttl = ARGV[11]
local ring_id = ARGV[12]               -- a drain job to register if none is alive
local stale_before = ARGV[13]          -- drainers without a heartbeat since then are dead
local api_class = ARGV[14]
local notify_url, notify_host = ARGV[15], ARGV[16]   -- '' without notifications
-- The same Idempotency-Key's entries under the tenant's aliases (ids its key had before, see
-- store/tenants.py): a submission first taken under one of them is answered too.
local idempotency_key = ARGV[17]       -- the Idempotency-Key as sent ('' without one): the timeline shows it
local alias_idem_keys = {unpack(ARGV, 18)}
-- The same call again (redis-py sends a command again when its answer was lost): it was
-- stored then, and may be on its way already; resetting it would send it twice. Answered
-- as the first run was: created, with its drain job if that still waits to be started.
if load(rid) then return {'created', rung(ring_id)} end
if idem_key ~= '' then
  local prev = redis.call('GET', idem_key)
  if prev then return {'existing', prev} end
  for _, name in ipairs(alias_idem_keys) do
    prev = redis.call('GET', name)
    if prev then return {'existing', prev} end
  end
end
create_request(rid, {tenant = tenant, method = method, path = path, params = params,
  callback_method = callback_method, submitted_at = now, timeout = timeout, api_class = api_class,
  notify_url = notify_url ~= '' and notify_url, notify_host = notify_url ~= '' and notify_host,
  idempotency_key = idempotency_key ~= '' and idempotency_key})
if idem_key ~= '' then redis.call('SET', idem_key, idem_value, 'EX', idem_ttl) end
return {'created', ring(ring_id, now, stale_before)}
