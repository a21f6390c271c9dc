-- A quarantined callback that now verifies was applied: take it out and count its outcome
-- (quarantine_applied_<outcome>), once, however many re-checks applied it at the same time.
-- ARGV: id overhead outcome unknown_overhead
local id, overhead, outcome, unknown_overhead = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if quarantine_drop(id, overhead, unknown_overhead) == 0 then return 0 end
count('quarantine_applied_' .. outcome)
return 1
