-- One page of a tenant's requests, newest first, read at one instant: the index
-- and the records agree (a request cannot change status between the two reads).
-- ARGV: tenant status ('' for all) offset limit
local index = tkey(ARGV[1], ARGV[2] ~= '' and ARGV[2] or nil)
local offset = tonumber(ARGV[3])
local answer = {redis.call('ZCARD', index)}
for _, rid in ipairs(redis.call('ZREVRANGE', index, offset, offset + tonumber(ARGV[4]) - 1)) do
  table.insert(answer, read_record(rid))
end
return answer
