-- A worker's notifier takes notifications that are due, leasing each by pushing
-- its due time to lease_until: a notifier that dies before settling leaves it
-- due again then, to be sent with the same webhook-id. At most `wanted` in all,
-- and per host only as many as the notifier has room for. Each comes with its
-- record as it stands, which is what the notification carries.
--
-- Hosts are taken in the order of `notify:hosts`: the one waiting longest first,
-- and a host served goes behind those still waiting (its score becomes now), so
-- the hosts with something due share the notifier in turn. A host without room
-- costs one look, whatever it has queued, and a claim looks at no more hosts than
-- those without room plus what it may take (and `spare`, for hosts whose score is
-- early because what made it so was sent or deleted since): its cost does not
-- grow with the backlog.
-- ARGV: now lease_until wanted host_room spare [host room]...
local now, lease_until, wanted = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local host_room = tonumber(ARGV[4])     -- room of a host not named in the tail
local spare = tonumber(ARGV[5])         -- hosts looked at beyond those without room and `wanted`
local tail = {select(6, unpack(ARGV))}  -- host, room, host, room...
local room, full = {}, 0
for i = 1, #tail, 2 do
  room[tail[i]] = tonumber(tail[i + 1])
  if room[tail[i]] <= 0 then full = full + 1 end
end

-- Notifications queued by a version without host queues move into them, a batch
-- per claim; their due times (leases included) are kept.
local MOVED_PER_CLAIM = 200
local unsplit = P .. 'notify:due'
local moving = redis.call('ZRANGE', unsplit, 0, MOVED_PER_CLAIM - 1, 'WITHSCORES')
for i = 1, #moving, 2 do
  local rid = moving[i]
  local r = load(rid)
  redis.call('ZREM', unsplit, rid)
  if r and r.notify_host and r.notify_status == 'pending' and not redis.call('ZSCORE', P .. 'notify:pending', rid) then
    schedule_notification(rid, r.notify_host, moving[i + 1])
  end
end

local claimed = {}
local hosts = redis.call('ZRANGEBYSCORE', P .. 'notify:hosts', '-inf', now, 'LIMIT', 0, full + wanted + spare)
for _, host in ipairs(hosts) do
  if #claimed >= wanted then break end
  local free = room[host] or host_room
  if free > 0 then
    local queue = notify_queue(host)
    for _, rid in ipairs(redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, math.min(free, wanted - #claimed))) do
      local r = load(rid)
      if r and r.notify_host == host and r.notify_event and r.notify_status == 'pending' then
        redis.call('ZADD', queue, lease_until, rid)
        redis.call('ZADD', P .. 'notify:pending', lease_until, rid)
        local row = {rid, r.notify_event, r.notify_attempts, host}
        for _, v in ipairs(read_record(rid)) do table.insert(row, v) end
        table.insert(claimed, row)
      else
        redis.call('ZREM', queue, rid)
        if not r or r.notify_status ~= 'pending' then redis.call('ZREM', P .. 'notify:pending', rid) end
      end
    end
    local first = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    if #first == 0 then
      redis.call('ZREM', P .. 'notify:hosts', host)
    else
      redis.call('ZADD', P .. 'notify:hosts', math.max(tonumber(first[2]), now), host)
    end
  end
end
return claimed
