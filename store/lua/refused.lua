-- A callback refused before any check could read it (larger than MAX_BODY_BYTES, kept nowhere):
-- counted (rejected_<reason>), and in the figures over time of all tenants and of the tenant
-- whose request `rid` (from the callback URL, '' when none) names.
-- ARGV: reason rid now
local reason, rid, now = ARGV[1], ARGV[2], ARGV[3]
count('rejected_' .. reason)
series_add(rid ~= '' and field(rid, 'tenant') or nil, now, 'r')
return 1
