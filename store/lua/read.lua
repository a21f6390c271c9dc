-- One record as the client reads it (see read_record in the prelude).
-- ARGV: rid
local rid = ARGV[1]
return read_record(rid)
