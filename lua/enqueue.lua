-- enqueue: put a job on its adapter's stream, atomically with its status record.
-- KEYS: job record, stream, queues set [, new-queues stream: told of a stream the first time it is used]
-- ARGV: id, adapter, tenant, job msgpack, max queue length (0: none), now_ms, expire_ms, group
--       [, request: the gateway's response options (JSON, opaque here), stored in the record]
-- Reply: {"ok", entry} | {"exists"} | {"full", length}
local job, stream, queues, new_queues = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, adapter, tenant, body = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_len, now, expire_ms, group = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8]
local request = ARGV[9]

if redis.call('EXISTS', job) == 1 then return {'exists'} end
if redis.call('EXISTS', stream) == 0 then
  -- The group starts at 0 so that it sees every entry, including this one.
  redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
elseif max_len > 0 then
  local n = redis.call('XLEN', stream)
  if n >= max_len then return {'full', n} end
end
local entry = redis.call('XADD', stream, '*', 'id', id, 'job', body)
redis.call('HSET', job, 'status', 'queued', 'adapter', adapter, 'tenant', tenant, 'stream', stream,
           'entry', entry, 'attempts', 0, 'created_ms', now)
if request and request ~= '' then redis.call('HSET', job, 'request', request) end
redis.call('PEXPIRE', job, expire_ms)
-- A stream no worker reads yet: tell one at once (an idle worker blocks on
-- P queues:new too), so the first job of a new adapter does not wait for the
-- workers' next look at the queues set.
if redis.call('SADD', queues, stream) == 1 and new_queues then
  redis.call('XADD', new_queues, 'MAXLEN', '~', 1000, '*', 'stream', stream)
end
return {'ok', entry}
