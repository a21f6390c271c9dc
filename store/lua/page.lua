-- One page of a tenant's requests, newest first, read at one instant: the index
-- and the records agree (a request cannot change status between the two reads).
-- The index is the one for the filters given (prelude's file_request); a time range
-- pages it by score, so every match is counted exactly and listed once.
-- ARGV: tenant status ('' for all) path ('' for all) since till (score bounds, '' for open) offset limit
local tenant, status, path = ARGV[1], ARGV[2], ARGV[3]
local since, till = ARGV[4], ARGV[5]
local offset, limit = tonumber(ARGV[6]), tonumber(ARGV[7])
local st = status ~= '' and status or nil
local index = path ~= '' and pkey(tenant, path, st) or tkey(tenant, st)
local answer, rids
if since == '' and till == '' then
  answer = {redis.call('ZCARD', index)}
  rids = redis.call('ZREVRANGE', index, offset, offset + limit - 1)
else
  since = since ~= '' and since or '-inf'
  till = till ~= '' and till or '+inf'
  answer = {redis.call('ZCOUNT', index, since, till)}
  rids = redis.call('ZREVRANGEBYSCORE', index, till, since, 'LIMIT', offset, limit)
end
for _, rid in ipairs(rids) do
  table.insert(answer, read_record(rid))
end
return answer
