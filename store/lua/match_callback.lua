-- A stored callback delivery finds its request: by the request id in the
-- signed callback URL, else by api_id; else it waits as an orphan for its api_id.
-- A signed delivery whose nonce was seen within the replay window is a replay:
-- answered as a duplicate, nothing changed.
-- ARGV: rid api_id delivery body digest now ttl orphan_ttl nonce_key replay_window_ms method
local rid, api_id, digest, now = ARGV[1], ARGV[2], ARGV[5], tonumber(ARGV[6])
if ARGV[9] ~= '' and not redis.call('SET', ARGV[9], '1', 'NX', 'PX', ARGV[10]) then
  count('callbacks_replayed')
  return 'duplicate'
end
local target = ''
if rid ~= '' and load(rid) then
  target = rid
elseif api_id ~= '' then
  target = redis.call('GET', P .. 'api:' .. api_id) or ''
end
local function keep_orphan()
  local okey = P .. 'orphan:' .. api_id
  if listed(okey, digest) then return 'duplicate' end
  redis.call('RPUSH', okey, digest .. ' ' .. cjson.encode({delivery = ARGV[3], body = ARGV[4], now = now,
    method = ARGV[11]}))
  redis.call('EXPIRE', okey, ARGV[8])
  return 'early'
end
local outcome
if target ~= '' then
  outcome = apply_delivery(target, api_id, ARGV[11], ARGV[3], ARGV[4], digest, now, tonumber(ARGV[7]))
else
  outcome = keep_orphan()
end
count('callbacks_' .. outcome)
return outcome
