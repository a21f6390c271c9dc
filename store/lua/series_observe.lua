-- Webhook latencies observed by one web process since its last flush (store/metrics.py), each
-- counted in the figures over time of all tenants and of one tenant: named (`t:` and its id, as
-- match_callback answered it), or the tenant of the request a callback never matched named,
-- looked up here, once a second, off the webhook's own path.
-- ARGV: [who minute slot n]...  who: 't:' .. tenant, a request id, or '' for neither
local observed = ARGV  -- four values per (who, minute, log bucket): its number of latencies
for i = 1, #observed, 4 do
  local who, tenant = observed[i], nil
  if string.sub(who, 1, 2) == 't:' then
    tenant = string.sub(who, 3)
  elseif who ~= '' then
    tenant = field(who, 'tenant')
  end
  series_add(tenant, tonumber(observed[i + 1]) * 60000, 'w' .. observed[i + 2], tonumber(observed[i + 3]))
end
return 1
