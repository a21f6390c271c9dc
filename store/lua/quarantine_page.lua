-- One page of the quarantine, newest first, read at one instant and without the bodies: the
-- count of entries younger than the TTL, then each entry's id, its description (the entry up
-- to its first newline) and 1 if its rid named a request when it was kept, else 0.
-- ARGV: now ttl_ms offset limit
local now, ttl_ms, offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local since = '(' .. (now - ttl_ms)
local answer = {redis.call('ZCOUNT', QUARANTINE, since, '+inf')}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', QUARANTINE, '+inf', since, 'LIMIT', offset, limit)) do
  local entry = redis.call('HGET', QUARANTINE_ENTRIES, id)
  if entry then
    local cut = string.find(entry, '\n', 1, true) or (#entry + 1)
    table.insert(answer, id)
    table.insert(answer, string.sub(entry, 1, cut - 1))
    table.insert(answer, redis.call('ZSCORE', QUARANTINE_UNKNOWN, id) and 0 or 1)
  end
end
return answer
