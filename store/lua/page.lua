-- One page of a tenant's requests, newest first, read at one instant: the index
-- and the records agree (a request cannot change status between the two reads).
-- The index is the one for the filters given (prelude's file_request), read by time,
-- so every match is counted exactly and listed once; a path without a status merges
-- that path's index of each status (a page deep in it costs a few dozen ZCOUNTs more).
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
  -- A path alone: that path's index of each status, merged. The entries before `offset` are not
  -- read (a deep page would read offset + limit of each, stalling Redis for everyone): the
  -- score of the page's first entry is found by halving on counts (ZCOUNT is a log each), then
  -- each index is read from it, only its ties before the page and the page itself.
  total, rids = 0, {}
  local indexes = {}
  for _, st in ipairs(statuses) do
    local index = pkey(tenant, path, st)
    local n = redis.call('ZCOUNT', index, since, till)
    if n > 0 then table.insert(indexes, index); total = total + n end
  end
  local top, skip = till, offset
  if offset >= total then
    indexes = {}
  elseif offset > 0 then
    -- scores are ms with at most three decimals: halve on thousandths of a ms
    local function milli(score) return math.floor(tonumber(score) * 1000 + 0.5) end
    local function score(u) return string.format('%.3f', u / 1000) end
    local lo, hi
    for _, index in ipairs(indexes) do
      local a = milli(redis.call('ZRANGEBYSCORE', index, since, till, 'WITHSCORES', 'LIMIT', 0, 1)[2])
      local b = milli(redis.call('ZREVRANGEBYSCORE', index, till, since, 'WITHSCORES', 'LIMIT', 0, 1)[2])
      lo, hi = math.min(lo or a, a), math.max(hi or b, b)
    end
    local function newer(u)   -- entries scored u or later
      local n = 0
      for _, index in ipairs(indexes) do n = n + redis.call('ZCOUNT', index, score(u), till) end
      return n
    end
    while lo < hi do          -- the latest u with more than `offset` entries at or after it
      local mid = lo + math.ceil((hi - lo) / 2)
      if newer(mid) > offset then lo = mid else hi = mid - 1 end
    end
    top, skip = score(lo), offset - newer(lo + 1)   -- skip: ties at `top` before the page
  end
  local heads = {}   -- per status: its newest skip + limit from `top`, as {score, rid}, newest first
  for _, index in ipairs(indexes) do
    local flat = redis.call('ZREVRANGEBYSCORE', index, top, since, 'WITHSCORES', 'LIMIT', 0, skip + limit)
    local list = {}
    for i = 1, #flat, 2 do table.insert(list, {tonumber(flat[i + 1]), flat[i]}) end
    if #list > 0 then table.insert(heads, {list = list, at = 1}) end
  end
  for n = 1, skip + limit do
    local best
    for _, h in ipairs(heads) do
      local e = h.list[h.at]
      if e and (not best or e[1] > best.list[best.at][1]
          or (e[1] == best.list[best.at][1] and e[2] > best.list[best.at][2])) then
        best = h
      end
    end
    if not best then break end
    if n > skip then table.insert(rids, best.list[best.at][2]) end
    best.at = best.at + 1
  end
end
local answer = {total}
for _, rid in ipairs(rids) do
  table.insert(answer, read_record(rid))
end
return answer
