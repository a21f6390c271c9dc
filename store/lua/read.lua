-- One record as the client reads it (see read_record in the prelude).
-- ARGV: rid
return read_record(ARGV[1])
