-- Requests filed under an alias of a tenant (an id its key had before: the unsalted hash
-- of the key, or the key's own id before it was named) move to the tenant, a batch at a
-- time: its index entries (all, by status, by path and status), each record's `tenant` field, and the
-- Idempotency-Key entries named (found by the caller with SCAN), which keep their expiry. Only records whose
-- tenant is the alias move; running it again, or from several processes at once, finds
-- nothing more to do. The alias's figures over time (store/series.py) named add to the
-- tenant's, each block keeping the later expiry, so that no key names the alias any more.
-- ARGV: alias tenant limit (records to move; 0: none) status_list (the statuses, space-separated) [idem_or_series_key...]
-- Answers {records moved, records still filed under the alias}.
local alias, tenant, limit, status_list = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local named = {unpack(ARGV, 5)}  -- Idempotency-Key entries and blocks of figures, by name
local statuses = {}
for status in string.gmatch(status_list, '%S+') do table.insert(statuses, status) end
local moved = 0
if limit > 0 then
  for _, rid in ipairs(redis.call('ZRANGE', tkey(alias), 0, limit - 1)) do
    local r = load(rid)
    if r and r.tenant == alias then
      unfile_request(rid, r)
      update(rid, {tenant = tenant})
      file_request(rid, r)
      moved = moved + 1
    else
      -- Gone, or not the alias's: only its entries under the alias go.
      for _, status in ipairs(statuses) do redis.call('ZREM', tkey(alias, status), rid) end
      if r then
        for _, status in ipairs(statuses) do redis.call('ZREM', pkey(alias, r.path, status), rid) end
      end
    end
    redis.call('ZREM', tkey(alias), rid)
  end
end
local from = P .. 'idem:' .. alias .. ':'
local series_from = P .. 'series:t:' .. alias .. ':'
local function merge_series(name)
  local target = P .. 'series:t:' .. tenant .. ':' .. name:sub(#series_from + 1)
  local fields = redis.call('HGETALL', name)
  for i = 1, #fields, 2 do redis.call('HINCRBY', target, fields[i], fields[i + 1]) end
  local ttl = redis.call('PTTL', name)
  if ttl > redis.call('PTTL', target) then redis.call('PEXPIRE', target, ttl) end
  redis.call('DEL', name)
end
for _, name in ipairs(named) do
  if name:sub(1, #series_from) == series_from then
    merge_series(name)
  elseif name:sub(1, #from) == from then
    local value = redis.call('GET', name)
    if value then
      local target = P .. 'idem:' .. tenant .. ':' .. name:sub(#from + 1)
      local ttl = redis.call('PTTL', name)
      -- The tenant's own entry for that key, if it has one, stays: it answers its retries.
      if ttl > 0 then
        redis.call('SET', target, value, 'PX', ttl, 'NX')
      else
        redis.call('SET', target, value, 'NX')
      end
      redis.call('DEL', name)
    end
  end
end
return {moved, redis.call('ZCARD', tkey(alias))}
