-- The upstream accepted the request and named its api_id: the request waits
-- for its callback, and callbacks that came first are applied now.
-- A request still `queued` under another claim keeps that claim's lease: its holder
-- settles it, or the sweep takes it back.
-- ARGV: rid api_id now deadline ttl claim_id
local rid, api_id, now = ARGV[1], ARGV[2], ARGV[3]
local deadline = ARGV[4]       -- ms; no callback by then: expired
local ttl = tonumber(ARGV[5])  -- seconds a finished request is kept
local claim_id = ARGV[6]       -- the claim that sent it ('' when not known)
if not load(rid) then return 'gone' end
count('sends_accepted')
index_api_id(rid, api_id)
sent_by(rid, claim_id, now)
if field(rid, 'status') ~= 'queued' then redis.call('ZREM', P .. 'leases', rid) end
if field(rid, 'status') == 'sending' then
  move_status(rid, 'pending')
  update(rid, {deadline = deadline, drainer = false, claim_id = false})
  redis.call('ZADD', P .. 'deadlines', deadline, rid)
end
local okey = P .. 'orphan:' .. api_id
for _, entry in ipairs(redis.call('LRANGE', okey, 0, -1)) do
  local space = string.find(entry, ' ', 1, true)
  local o = cjson.decode(string.sub(entry, space + 1))
  local digest = string.sub(entry, 1, space - 1)
  apply_delivery(rid, api_id, o.method, o.delivery, o.body, digest, o.now, ttl)
  callback_event(rid, 'early', o.now, o.method, o.signature or '', #o.body, digest)
end
redis.call('DEL', okey)
return field(rid, 'status')
