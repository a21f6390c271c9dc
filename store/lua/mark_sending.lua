-- Just before the request leaves: the send marker. Only a queued request still held
-- by the claim that took it may be sent (one taken back from a silent drain job is
-- not). Once `sending`, a crash means the request may have left: the sweep never
-- resends a POST. Before it, the request provably never left and is sent again.
-- With a rate-limit turn's arguments, the turn is taken here too (one round trip per send).
-- A request whose send-by time has passed (prelude's send_by) is not sent: it is expired
-- here, whatever claim holds it, so a claim taken just before that time sends nothing after it.
-- ARGV: rid claim_id now ttl key limit window_ms member waited_ms (the last five only with a rate-limit turn)
-- Answers 1 (marked sending; again for the same claim, after an outage cut the first
-- answer off: 1, nothing changed), 0 (not queued for this claim, or expired now: nothing
-- to send) or -N (the turn comes in N ms; nothing changed).
local rid, claim_id, now = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])           -- seconds a finished request is kept
local key = ARGV[5]                     -- the rate limiter's key; absent: no turn to take
local limit, window_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local member = ARGV[8]                  -- this send's entry in the limiter's log
local waited_ms = tonumber(ARGV[9])     -- how long this send has waited for its turn so far
local r = load(rid)
if not r or r.claim_id ~= claim_id then return 0 end
if r.status == 'sending' then return 1 end
if r.status ~= 'queued' then return 0 end
if tonumber(now) > send_by(r) then
  expire_unsent(rid, now, ttl)
  return 0
end
-- sent_at is `now`, or with a turn the moment the limiter granted it by Redis's clock (the
-- time the limit is kept by, so the records show that the limit held).
local sent_at = now
if key then
  local wait = rate_turn(key, limit, window_ms, member, waited_ms)
  if wait > 0 then return -wait end
  sent_at = redis.call('ZSCORE', key, member)
end
move_status(rid, 'sending')
update(rid, {attempts = (tonumber(r.attempts) or 0) + 1, sent_at = sent_at})
return 1
