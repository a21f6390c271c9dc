-- One upstream send asks for its turn (see rate_turn in the prelude).
-- ARGV: key limit window_ms member waited_ms
-- Answers 0 (go now) or the milliseconds to wait before asking again.
return rate_turn(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
