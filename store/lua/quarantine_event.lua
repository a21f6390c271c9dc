-- A refused callback's event, in the partition of the request its rid names, before it is kept
-- in the quarantine's (quarantine_keep.lua, given the tenant this answers): with several
-- partitions the two are apart.
-- ARGV: rid now method signature body_size reason
-- Answers the request's tenant ('' when the rid names no request).
local rid, now, method, signature, body_size, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
return refused_event(rid, tonumber(now), method, signature, body_size, reason) or ''
