-- complete: a job finished; record, publish and acknowledge it once.
-- KEYS: job record, stream, log
-- ARGV: worker, attempts, entry, group, end event msgpack, channel, ttl_ms, now_ms
-- Reply: {"ok"} | {"over", status} | {"lost"}
local job, stream, log = KEYS[1], KEYS[2], KEYS[3]
local worker, attempts, entry, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local event, channel, ttl, now = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]

local rec = redis.call('HMGET', job, 'status', 'worker', 'attempts')
local status = rec[1]
if not status then return {'over', 'expired'} end
if status ~= 'running' then
  -- Over already (a retried job completing twice, or cancelled): acknowledge quietly.
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  return {'over', status}
end
if rec[2] ~= worker or rec[3] ~= attempts then return {'lost'} end
redis.call('HSET', job, 'status', 'done', 'result', event, 'finished_ms', now)
redis.call('RPUSH', log, event)
redis.call('PUBLISH', channel, event)
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
redis.call('PEXPIRE', job, ttl)
redis.call('PEXPIRE', log, ttl)
return {'ok'}
