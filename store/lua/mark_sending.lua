-- Just before the request leaves: only a queued, leased request may be sent.
-- With a rate-limit turn's arguments, the turn is taken here too (one round trip per send).
-- ARGV: rid now [key limit window_ms member waited_ms]
-- sent_at is `now`, or with a turn the moment the limiter granted it by Redis's clock (the
-- time the limit is kept by, so the records show that the limit held).
-- Answers 1 (marked sending), 0 (not queued: nothing to send) or -N (the turn comes
-- in N ms; nothing changed).
local rid = ARGV[1]
local sent_at = ARGV[2]
if field(rid, 'status') ~= 'queued' then return 0 end
if ARGV[3] then
  local wait = rate_turn(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))
  if wait > 0 then return -wait end
  sent_at = redis.call('ZSCORE', ARGV[3], ARGV[6])
end
move_status(rid, 'sending')
update(rid, {attempts = (tonumber(field(rid, 'attempts')) or 0) + 1, sent_at = sent_at})
return 1
