-- One upstream send asks for its turn. A sliding log per (account, API class):
-- at most `limit` sends in any `window_ms`, over every worker on every machine,
-- timed by Redis's own clock; and turns spaced `window_ms / limit` apart, so
-- sends go out evenly, not in bursts that network jitter could squeeze into
-- one window at the upstream. A pause (after a 429) holds everyone back.
-- ARGV: key limit window_ms member waited_ms
-- Answers 0 (go now) or the milliseconds to wait before asking again.
local key, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = redis.call('PTTL', key .. ':pause')
if pause > 0 then return pause end
local spacing = math.floor(window / limit)
local last = tonumber(redis.call('GET', key .. ':last') or '0')
if now < last + spacing then return last + spacing - now end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window * 2)
redis.call('SET', key .. ':last', now, 'PX', window * 2)
local waited = tonumber(ARGV[5])
local most = tonumber(redis.call('HGET', P .. 'metrics', 'ratelimit_wait_max_ms') or '0')
if waited > most then redis.call('HSET', P .. 'metrics', 'ratelimit_wait_max_ms', waited) end
if waited > 0 then redis.call('HINCRBY', P .. 'metrics', 'ratelimit_waits', 1) end
return 0
