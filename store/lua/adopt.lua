-- A finished request copied from another store (store/migrate.py): its record as stored there
-- (packed, any format version this code reads), filed in this partition's listing indexes, its
-- purge and api_id index, and its notification if one was still due. The lists that hang on it
-- were copied first. Run again, it changes nothing: the record is there.
-- ARGV: rid raw purge_at notify_due ('' for none)
local rid, raw, purge_at, notify_due = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', rkey(rid)) == 1 then return 0 end
redis.call('SET', rkey(rid), raw)
local r = load(rid)
file_request(rid, r)
schedule_purge(rid, purge_at)
if r.api_id and r.api_id ~= '' then redis.call('SET', P .. 'api:' .. r.api_id, rid) end
if notify_due ~= '' and r.notify_status == 'pending' then
  schedule_notification(rid, r.notify_host or '', tonumber(notify_due))
end
return 1
