-- fail: end a job with an error, publish it, and keep a dead letter.
-- An unfenced call (attempts "0") is for entries a worker cannot even start
-- (malformed msgpack, unknown adapter): a missing record is created so the
-- failure is visible to whoever asks about the job id.
-- KEYS: job record, stream, log, dead-letter stream
-- ARGV: entry, group, worker, attempts, error, error_type, id, channel, ttl_ms, now_ms, raw job
-- Reply: {"ok"} | {"over", status} | {"lost"}
-- The text generated so far, from the token events in the log.
local function logged_text(log)
  local parts = {}
  for _, e in ipairs(redis.call('LRANGE', log, 0, -1)) do
    local ok, ev = pcall(cmsgpack.unpack, e)
    if ok and type(ev) == 'table' and ev.type == 'token' and type(ev.text) == 'string' and not ev.special then
      parts[#parts + 1] = ev.text
    end
  end
  return table.concat(parts)
end

local job, stream, log, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local entry, group, worker, attempts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local err, err_type, id, channel = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ttl, now, body = tonumber(ARGV[9]), ARGV[10], ARGV[11]

local rec = redis.call('HMGET', job, 'status', 'worker', 'attempts')
local status = rec[1]
if status == 'done' or status == 'failed' or status == 'cancelled' then
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  return {'over', status}
end
if attempts ~= '0' and status and (rec[2] ~= worker or rec[3] ~= attempts) then return {'lost'} end

local logged = redis.call('LLEN', log)
local ev = {v = 1, type = 'end', job = id, index = logged, finish_reason = 'error', text = logged_text(log),
            generated_tokens = logged, prompt_tokens = 0, error = err, error_type = err_type}
if worker ~= '' then ev.worker = worker end
local packed = cmsgpack.pack(ev)
redis.call('HSET', job, 'status', 'failed', 'result', packed, 'finished_ms', now, 'stream', stream,
           'entry', entry)
if worker ~= '' then redis.call('HSET', job, 'worker', worker) end
redis.call('RPUSH', log, packed)
redis.call('PUBLISH', channel, packed)
redis.call('XADD', dead, '*', 'id', id, 'stream', stream, 'entry', entry, 'error', err,
           'error_type', err_type, 'attempts', rec[3] or '0', 'worker', worker, 'job', body)
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
redis.call('PEXPIRE', job, ttl)
redis.call('PEXPIRE', log, ttl)
return {'ok'}
