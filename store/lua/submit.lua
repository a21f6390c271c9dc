-- A new request: the record, its indexes and its place in the outbox, all at once.
-- ARGV: rid tenant method path params callback_method now timeout
--       idem_key idem_value idem_ttl ring_id stale_before api_class notify_url notify_host
local rid, tenant, now = ARGV[1], ARGV[2], ARGV[7]
local idem_key = ARGV[9]
if idem_key ~= '' then
  local prev = redis.call('GET', idem_key)
  if prev then return {'existing', prev} end
end
update(rid, {tenant = tenant, status = 'queued', method = ARGV[3], path = ARGV[4], params = ARGV[5],
  callback_method = ARGV[6], submitted_at = now, timeout = ARGV[8], api_class = ARGV[14]})
if ARGV[15] ~= '' then update(rid, {notify_url = ARGV[15], notify_host = ARGV[16], notify_status = 'pending'}) end
redis.call('ZADD', tkey(tenant), now, rid)
redis.call('ZADD', tkey(tenant, 'queued'), now, rid)
if idem_key ~= '' then redis.call('SET', idem_key, ARGV[10], 'EX', ARGV[11]) end
requeue(rid)
count('submitted')
return {'created', ring(ARGV[12], now, ARGV[13])}
