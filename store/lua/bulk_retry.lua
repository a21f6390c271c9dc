-- One step of a bulk retry (store/retries.py): retry the next request ids of its list,
-- one new id each, counting each as retried or skipped (not failed or expired any more,
-- retried already, gone). A step is atomic, so a bulk stopped between steps (its worker
-- killed) resumes where it was; once its list is empty it is done.
-- ARGV: bulk_id now ring_id stale_before [new_rid...]
local bulk_id = ARGV[1]
local now = ARGV[2]                  -- ms with three decimals, as a submission's
local ring_id = ARGV[3]              -- a drain job to register if none is alive
local stale_before = ARGV[4]         -- drainers without a heartbeat since then are dead
local new_rids = {unpack(ARGV, 5)}
local bkey, list = P .. 'bulk:' .. bulk_id, P .. 'bulk:' .. bulk_id .. ':rids'
local tenant = redis.call('HGET', bkey, 'tenant')
local created = false
if tenant then
  for _, new_rid in ipairs(new_rids) do
    local rid = redis.call('LPOP', list)
    if not rid then break end
    if retry_request(rid, new_rid, tenant, now) == 'created' then
      created = true
      redis.call('HINCRBY', bkey, 'retried', 1)
    else
      redis.call('HINCRBY', bkey, 'skipped', 1)
    end
  end
end
local left = redis.call('LLEN', list)
if left == 0 then
  -- once: a second sweep that listed the bulk before the first finished it changes nothing
  if tenant and redis.call('HGET', bkey, 'status') ~= 'done' then
    redis.call('HSET', bkey, 'status', 'done', 'finished_at', math.floor(tonumber(now)))
  end
  redis.call('ZREM', P .. 'bulk:running', bulk_id)
end
return {created and ring(ring_id, now, stale_before) or '', left}
