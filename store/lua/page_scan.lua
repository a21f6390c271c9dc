-- A listing over several partitions (store/listing.py), this partition's part: with probes, how
-- many of its matches of the filter (in the indexes page.lua would read) are scored at or after
-- each probe; without, how many match, their oldest and newest scores, and the newest `n` of them
-- (request id and score, newest first, ties as page.lua orders them). Counts are a log each, and
-- no record is read: the page's records are read by page.lua once the merge has picked them.
-- ARGV: tenant status path since till n probes [probe...] [status...]
local tenant, status, path = ARGV[1], ARGV[2], ARGV[3]
local since, till = ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])       -- entries to answer (without probes)
local probes = tonumber(ARGV[7])  -- how many scores follow, then every status there is (a path alone)
local scores = {unpack(ARGV, 8, 7 + probes)}
local statuses = {unpack(ARGV, 8 + probes)}
since = since ~= '' and since or '-inf'
till = till ~= '' and till or '+inf'

local indexes, counted = {}, {}
if path == '' then
  indexes = {tkey(tenant, status ~= '' and status or nil)}
elseif status ~= '' then
  indexes = {pkey(tenant, path, status)}
else
  for _, st in ipairs(statuses) do table.insert(indexes, pkey(tenant, path, st)) end
end
local total = 0
for _, index in ipairs(indexes) do  -- only the indexes with matches are read further
  local count = redis.call('ZCOUNT', index, since, till)
  if count > 0 then table.insert(counted, index); total = total + count end
end

if probes > 0 then
  local counts = {}
  for i, score in ipairs(scores) do
    local newer = 0
    for _, index in ipairs(counted) do newer = newer + redis.call('ZCOUNT', index, score, till) end
    counts[i] = newer
  end
  return counts
end
local oldest, newest, entries = false, false, {}
for _, index in ipairs(counted) do
  local a = redis.call('ZRANGEBYSCORE', index, since, till, 'WITHSCORES', 'LIMIT', 0, 1)[2]
  if not oldest or tonumber(a) < tonumber(oldest) then oldest = a end
  local flat = redis.call('ZREVRANGEBYSCORE', index, till, since, 'WITHSCORES', 'LIMIT', 0, math.max(n, 1))
  if not newest or tonumber(flat[2]) > tonumber(newest) then newest = flat[2] end
  for i = 1, math.min(#flat, 2 * n), 2 do table.insert(entries, {tonumber(flat[i + 1]), flat[i], flat[i + 1]}) end
end
table.sort(entries, function(x, y) return x[1] > y[1] or (x[1] == y[1] and x[2] > y[2]) end)
local answer = {total, oldest or '', newest or ''}
for i = 1, math.min(n, #entries) do
  table.insert(answer, entries[i][2]); table.insert(answer, entries[i][3])
end
return answer
