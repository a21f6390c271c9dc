-- A worker's notifier takes notifications that are due, leasing each by pushing
-- its due time to lease_until: a notifier that dies before settling leaves it
-- due again then, to be sent with the same webhook-id. At most `wanted` in all,
-- and per host only as many as the notifier has room for. Each comes with its
-- record as it stands, which is what the notification carries.
-- ARGV: now lease_until wanted scan host_room [host room]...
local now, lease_until, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3])
local scan = tonumber(ARGV[4])          -- how many due entries to look at, at most
local host_room = tonumber(ARGV[5])     -- room of a host not named in the tail
local tail = {select(6, unpack(ARGV))}  -- host, room, host, room...
local room = {}
for i = 1, #tail, 2 do room[tail[i]] = tonumber(tail[i + 1]) end
local due = P .. 'notify:due'
local claimed = {}
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, scan)) do
  if #claimed >= wanted then break end
  local r = load(rid) or {}
  local f = {r.notify_host, r.notify_event, r.notify_attempts}
  if not f[1] or not f[2] then
    redis.call('ZREM', due, rid)
  elseif (room[f[1]] or host_room) > 0 then
    room[f[1]] = (room[f[1]] or host_room) - 1
    redis.call('ZADD', due, lease_until, rid)
    local row = {rid, f[2], f[3], f[1]}
    for _, v in ipairs(read_record(rid)) do table.insert(row, v) end
    table.insert(claimed, row)
  end
end
return claimed
