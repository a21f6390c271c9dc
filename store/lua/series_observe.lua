-- Webhook latencies observed by one web process since its last flush (store/metrics.py), each
-- counted in the figures over time of all tenants and of the tenant whose request its callback
-- URL named: resolved here, once a second, off the webhook's own path.
-- ARGV: [rid minute slot n]...  rid '' when the callback named none
local observed = ARGV  -- four values per (request, minute, log bucket): its number of latencies
for i = 1, #observed, 4 do
  local rid = observed[i]
  local tenant = rid ~= '' and field(rid, 'tenant') or nil
  series_add(tenant, tonumber(observed[i + 1]) * 60000, 'w' .. observed[i + 2], tonumber(observed[i + 3]))
end
return 1
