-- Just before the request leaves: the send marker. Only a queued request still held
-- by the claim that took it may be sent (one taken back from a silent drain job is
-- not). Once `sending`, a crash means the request may have left: the sweep never
-- resends a POST. Before it, the request provably never left and is sent again.
-- With a rate-limit turn's arguments, the turn is taken here too (one round trip per send).
-- ARGV: rid claim_id now [key limit window_ms member waited_ms]
-- sent_at is `now`, or with a turn the moment the limiter granted it by Redis's clock (the
-- time the limit is kept by, so the records show that the limit held).
-- Answers 1 (marked sending; again for the same claim, after an outage cut the first
-- answer off: 1, nothing changed), 0 (not queued for this claim: nothing to send) or
-- -N (the turn comes in N ms; nothing changed).
local rid, claim_id = ARGV[1], ARGV[2]
local sent_at = ARGV[3]
local r = load(rid)
if not r or r.claim_id ~= claim_id then return 0 end
if r.status == 'sending' then return 1 end
if r.status ~= 'queued' then return 0 end
if ARGV[4] then
  local wait = rate_turn(ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]))
  if wait > 0 then return -wait end
  sent_at = redis.call('ZSCORE', ARGV[4], ARGV[7])
end
move_status(rid, 'sending')
update(rid, {attempts = (tonumber(r.attempts) or 0) + 1, sent_at = sent_at})
return 1
