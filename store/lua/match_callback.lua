-- A stored callback delivery finds its request: by the request id in the
-- signed callback URL, else by api_id; else it waits as an orphan for its api_id.
-- A signed delivery whose nonce was seen within the replay window is a replay:
-- answered as a duplicate, nothing changed.
-- Answers {outcome, tenant}: the tenant of the request the callback URL named ('' for none),
-- whose figures over time the webhook's latency goes into (store/metrics.py).
-- ARGV: rid api_id delivery body digest now ttl orphan_ttl nonce_key replay_window_ms method elsewhere
local rid = ARGV[1]                    -- from the signed callback URL; '' when absent or not a UUID
local api_id = ARGV[2]
local delivery = ARGV[3]               -- JSON: received_at, method, api_id, body
local body = ARGV[4]                   -- the canonical body (sorted keys): kept as the response
local digest = ARGV[5]                 -- of api_id and body: tells a repeated delivery
local now = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])          -- seconds a finished request is kept
local orphan_ttl = ARGV[8]             -- seconds an unmatched delivery waits for its api_id
local nonce_key = ARGV[9]              -- the signature nonce's key; '' when unsigned
local replay_window_ms = ARGV[10]
local method = ARGV[11]
-- '1': with a rid, the api_id's home pointer names a request in another partition
-- (store/deliveries.py): if `rid` names none here, answer {'elsewhere', ''} having written
-- nothing, to be matched there. Without a rid, in the api_id's home partition: the home pointer
-- (the same key as this partition's index) may have been written since the caller looked, naming
-- a request of another partition; then answer {'elsewhere', that request}, having written nothing.
local elsewhere = ARGV[12] == '1'
if elsewhere and rid ~= '' and not load(rid) then return {'elsewhere', ''} end
if elsewhere and rid == '' and api_id ~= '' then
  local named = redis.call('GET', P .. 'api:' .. api_id)
  if named and not load(named) then return {'elsewhere', named} end
end
local signature = nonce_key ~= '' and 'valid' or 'unchecked'  -- a signed delivery has a nonce
local function target_of()
  if rid ~= '' and load(rid) then return rid end
  if api_id ~= '' then return redis.call('GET', P .. 'api:' .. api_id) or '' end
  return ''
end
if nonce_key ~= '' and not redis.call('SET', nonce_key, '1', 'NX', 'PX', replay_window_ms) then
  count('callbacks_replayed')
  local target = target_of()
  if target ~= '' then callback_event(target, 'duplicate', now, method, signature, #body, digest) end
  return {'duplicate', rid ~= '' and field(rid, 'tenant') or ''}
end
local target = target_of()
local function keep_orphan()
  local okey = P .. 'orphan:' .. api_id
  if listed(okey, digest) then return 'duplicate' end
  redis.call('RPUSH', okey, digest .. ' ' .. cjson.encode({delivery = delivery, body = body, now = now,
    method = method, signature = signature}))
  redis.call('EXPIRE', okey, orphan_ttl)
  return 'early'
end
local outcome
if target ~= '' then
  outcome = apply_delivery(target, api_id, method, delivery, body, digest, now, ttl)
  if outcome ~= 'matched' then callback_event(target, outcome, now, method, signature, #body, digest) end
else
  outcome = keep_orphan()
end
count('callbacks_' .. outcome)
return {outcome, rid ~= '' and field(rid, 'tenant') or ''}
