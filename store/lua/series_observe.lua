-- Webhook latencies observed by one web process since its last flush (store/metrics.py), each
-- counted in the figures over time of all tenants and of the tenant whose request its callback
-- URL named: resolved here, once a second, off the webhook's own path.
-- ARGV: (rid minute slot n)...  rid '' when the callback named none
for i = 1, #ARGV, 4 do
  local rid = ARGV[i]
  local tenant = rid ~= '' and field(rid, 'tenant') or nil
  series_add(tenant, tonumber(ARGV[i + 1]) * 60000, 'w' .. ARGV[i + 2], tonumber(ARGV[i + 3]))
end
return 1
