-- One upstream send asks for its turn (see rate_turn in the prelude).
-- ARGV: key limit window_ms member waited_ms
-- Answers 0 (go now) or the milliseconds to wait before asking again.
local key, limit, window_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local member = ARGV[4]                  -- this send's entry in the limiter's log
local waited_ms = tonumber(ARGV[5])     -- how long this send has waited for its turn so far
return rate_turn(key, limit, window_ms, member, waited_ms)
