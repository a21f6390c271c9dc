-- One page of a tenant's requests, newest first, read at one instant: the index
-- and the records agree (a request cannot change status between the two reads).
-- The index is the one for the filters given (prelude's file_request), read by time,
-- so every match is counted exactly and listed once; a path without a status merges
-- that path's index of each status (a page deep in it reads offset + limit of each).
-- ARGV: tenant status ('' for all) path ('' for all) since till (score bounds, '' for open) offset limit [status...]
local tenant, status, path = ARGV[1], ARGV[2], ARGV[3]
local since, till = ARGV[4], ARGV[5]
local offset, limit = tonumber(ARGV[6]), tonumber(ARGV[7])
local statuses = {unpack(ARGV, 8)}    -- every status there is, for a path without one
since = since ~= '' and since or '-inf'
till = till ~= '' and till or '+inf'

local function newest(index, from, n)
  if since == '-inf' and till == '+inf' then
    return redis.call('ZCARD', index), redis.call('ZREVRANGE', index, from, from + n - 1)
  end
  return redis.call('ZCOUNT', index, since, till),
    redis.call('ZREVRANGEBYSCORE', index, till, since, 'LIMIT', from, n)
end

local total, rids
if path == '' then
  total, rids = newest(tkey(tenant, status ~= '' and status or nil), offset, limit)
elseif status ~= '' then
  total, rids = newest(pkey(tenant, path, status), offset, limit)
else
  total, rids = 0, {}
  local heads = {}   -- per status: its newest offset + limit, as {score, rid}, newest first
  for _, st in ipairs(statuses) do
    local index = pkey(tenant, path, st)
    total = total + redis.call('ZCOUNT', index, since, till)
    local flat = redis.call('ZREVRANGEBYSCORE', index, till, since, 'WITHSCORES', 'LIMIT', 0, offset + limit)
    local list = {}
    for i = 1, #flat, 2 do table.insert(list, {tonumber(flat[i + 1]), flat[i]}) end
    if #list > 0 then table.insert(heads, {list = list, at = 1}) end
  end
  for n = 1, offset + limit do
    local best
    for _, h in ipairs(heads) do
      local e = h.list[h.at]
      if e and (not best or e[1] > best.list[best.at][1]
          or (e[1] == best.list[best.at][1] and e[2] > best.list[best.at][2])) then
        best = h
      end
    end
    if not best then break end
    if n > offset then table.insert(rids, best.list[best.at][2]) end
    best.at = best.at + 1
  end
end
local answer = {total}
for _, rid in ipairs(rids) do
  table.insert(answer, read_record(rid))
end
return answer
