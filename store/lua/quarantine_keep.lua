-- Keep a refused callback in the quarantine and count its refusal (rejected_<reason>), in one
-- call. Entries older than the TTL go first, then others until the new one fits within
-- max_bytes: an endless stream of forged callbacks costs at most max_bytes. Those whose rid
-- named no request when kept go before any that named one, whatever their age, the oldest
-- first within each: a forger needs no secret to send the first kind, but only Plivo knows
-- the rids of requests, so a flood of forgeries cannot push out the genuine callbacks our own
-- settings refused. A new entry naming no request that does not fit beside those naming one
-- is not kept. Each entry dropped is counted (quarantine_dropped_expired,
-- quarantine_dropped_full, and quarantine_full_known or quarantine_full_unknown beside the
-- latter). Answers the entry's id ('' if it was not kept): `now-n`, n counting the entries
-- kept in the same millisecond, so that ids of equal scores (which Redis orders by id) are in
-- the order they were kept.
-- A refusal of a callback naming a known request is one of that request's events, kept or not,
-- and counts in the figures over time of all tenants and of that request's tenant.
-- Each entry counts its length plus `overhead`, plus `unknown_overhead` for one naming no
-- request (its id in a second sorted set).
-- With several partitions the request is in its own, not the quarantine's: its event was
-- added there first (quarantine_event.lua), which answered its tenant, passed as `tenant`.
-- ARGV: entry now ttl_ms max_bytes overhead reason rid method signature body_size unknown_overhead [tenant]
local entry, now, ttl_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_bytes, overhead, reason = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local rid, method, signature, body_size = ARGV[7] or '', ARGV[8], ARGV[9], tonumber(ARGV[10])
local unknown_overhead = tonumber(ARGV[11])
local read_apart = {unpack(ARGV, 12)}  -- {tenant} when read in the request's partition
count('rejected_' .. reason)
local tenant
if #read_apart > 0 then
  tenant = read_apart[1] ~= '' and read_apart[1] or nil  -- '': the rid named no request
else
  tenant = refused_event(rid, now, method, signature, body_size, reason)
end
local known = tenant ~= nil
series_add(tenant, now, 'r')
for _, old in ipairs(redis.call('ZRANGEBYSCORE', QUARANTINE, '-inf', now - ttl_ms)) do
  quarantine_drop(old, overhead, unknown_overhead)
  count('quarantine_dropped_expired')
end

local function dropped_full(class)
  count('quarantine_dropped_full')
  count('quarantine_full_' .. class)
end

local function bytes(key) return tonumber(redis.call('GET', key) or '0') end

local size = #entry + overhead + (known and 0 or unknown_overhead)
if redis.call('ZCARD', QUARANTINE) == 0 then redis.call('DEL', QUARANTINE_BYTES) end
if redis.call('ZCARD', QUARANTINE_UNKNOWN) == 0 then redis.call('DEL', QUARANTINE_UNKNOWN_BYTES) end
if size > max_bytes or (not known and bytes(QUARANTINE_BYTES) - bytes(QUARANTINE_UNKNOWN_BYTES) + size > max_bytes) then
  dropped_full(known and 'known' or 'unknown')
  return ''
end
while bytes(QUARANTINE_BYTES) + size > max_bytes do
  local oldest, class = redis.call('ZRANGE', QUARANTINE_UNKNOWN, 0, 0)[1], 'unknown'
  if not oldest then
    oldest, class = redis.call('ZRANGE', QUARANTINE, 0, 0)[1], 'known'
  end
  if not oldest then
    redis.call('DEL', QUARANTINE_BYTES, QUARANTINE_UNKNOWN_BYTES)
    break
  end
  if quarantine_drop(oldest, overhead, unknown_overhead) > 0 then dropped_full(class) end
end
local last = redis.call('ZREVRANGEBYSCORE', QUARANTINE, now, now, 'LIMIT', 0, 1)[1]
local id = string.format('%d-%06d', now, last and tonumber(string.match(last, '-(%d+)$')) + 1 or 0)
redis.call('ZADD', QUARANTINE, now, id)
redis.call('HSET', QUARANTINE_ENTRIES, id, entry)
redis.call('INCRBY', QUARANTINE_BYTES, size)
if not known then
  redis.call('ZADD', QUARANTINE_UNKNOWN, now, id)
  redis.call('INCRBY', QUARANTINE_UNKNOWN_BYTES, size)
end
for _, key in ipairs({QUARANTINE, QUARANTINE_ENTRIES, QUARANTINE_BYTES, QUARANTINE_UNKNOWN, QUARANTINE_UNKNOWN_BYTES}) do
  redis.call('PEXPIRE', key, ttl_ms)
end
return id
