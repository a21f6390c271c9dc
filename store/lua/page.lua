-- One page of a tenant's requests, newest first, read at one instant: the index
-- and the records agree (a request cannot change status between the two reads).
-- ARGV: tenant status ('' for all) offset limit
local tenant, status, offset, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local index = tkey(tenant, status ~= '' and status or nil)
local answer = {redis.call('ZCARD', index)}
for _, rid in ipairs(redis.call('ZREVRANGE', index, offset, offset + limit - 1)) do
  table.insert(answer, read_record(rid))
end
return answer
