-- emit: deliver one token event of a running job, exactly once.
-- Fenced by (worker, attempts): a worker whose job was claimed away gets "lost".
-- Idempotent by index: an index already in the log is neither logged nor published again.
-- KEYS: job record, log
-- ARGV: worker, attempts, index, event msgpack, channel, ttl_ms
-- Reply: {"ok"} | {"dup"} | {"gap", logged} | {"cancelled"} | {"over", status} | {"lost"}
local job, log = KEYS[1], KEYS[2]
local worker, attempts, index = ARGV[1], ARGV[2], tonumber(ARGV[3])
local event, channel, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6])

local rec = redis.call('HMGET', job, 'status', 'worker', 'attempts')
local status = rec[1]
if not status then return {'over', 'expired'} end
if status == 'cancelled' then return {'cancelled'} end
if status ~= 'running' then return {'over', status} end
if rec[2] ~= worker or rec[3] ~= attempts then return {'lost'} end
local logged = redis.call('LLEN', log)
if index < logged then return {'dup'} end
if index > logged then return {'gap', logged} end
redis.call('RPUSH', log, event)
if logged == 0 then
  -- The log lives as long as the record (which enqueue set to expire after the deadline).
  local left = redis.call('PTTL', job)
  redis.call('PEXPIRE', log, left > 0 and left or ttl)
end
redis.call('PUBLISH', channel, event)
return {'ok'}
