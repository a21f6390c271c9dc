-- Count one step of a bulk retry (store/retries.py), in the bulk's partition: the requests at
-- the head of its list were each retried by retry.lua in its own partition, and are counted
-- here as retried (made by this bulk) or skipped (not failed or expired any more, retried
-- already, gone), then taken off the list with their planned ids. Only if they are still the
-- list's head: a second sweep that took the same ones (the sweep's lock lapsed) found the
-- same verdicts, and whichever counts second counts nothing. Once the list is empty the
-- bulk is done.
-- ARGV: bulk_id now [rid verdict]...
-- Answers the ids still to retry.
local bulk_id, now = ARGV[1], ARGV[2]  -- now: ms with three decimals, as a submission's
local verdicts = {unpack(ARGV, 3)}
local bkey, list, plan = P .. 'bulk:' .. bulk_id, P .. 'bulk:' .. bulk_id .. ':rids', P .. 'bulk:' .. bulk_id .. ':plan'
local n = #verdicts / 2
if n > 0 and redis.call('EXISTS', bkey) == 1 then
  local head = redis.call('LRANGE', list, 0, n - 1)
  local same = #head == n
  for i = 1, n do
    if head[i] ~= verdicts[2 * i - 1] then same = false end
  end
  if same then
    local rids, retried = {}, 0
    for i = 1, n do
      table.insert(rids, verdicts[2 * i - 1])
      if verdicts[2 * i] == 'retried' then retried = retried + 1 end
    end
    redis.call('LTRIM', list, n, -1)
    redis.call('HDEL', plan, unpack(rids))
    redis.call('HINCRBY', bkey, 'retried', retried)
    redis.call('HINCRBY', bkey, 'skipped', n - retried)
  end
end
local left = redis.call('LLEN', list)
if left == 0 then
  -- once: a second sweep that listed the bulk before the first finished it changes nothing
  if redis.call('HGET', bkey, 'status') == 'running' then
    redis.call('HSET', bkey, 'status', 'done', 'finished_at', math.floor(tonumber(now)))
  end
  redis.call('DEL', plan)
  redis.call('ZREM', P .. 'bulk:running', bulk_id)
end
return left
