-- start: a worker begins (or resumes) a job it read from a stream or claimed.
-- KEYS: job record, stream, log, dead-letter stream
-- ARGV: entry, worker, max attempts, now_ms, group, channel, ttl_ms
-- Reply: {"run", attempts, logged tokens} | {"over", status} | {"dead"} | {"missing"}
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
local entry, worker, max_attempts, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local group, channel, ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])

local status = redis.call('HGET', job, 'status')
if not status then return {'missing'} end
if status == 'done' or status == 'failed' or status == 'cancelled' then
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  return {'over', status}
end

-- The log holds token events and, once over, the end event; count the tokens.
local logged = redis.call('LLEN', log)
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
if attempts > max_attempts then
  local last = redis.call('HGET', job, 'worker') or ''
  local msg = 'job failed ' .. (attempts - 1) .. ' attempts (last on worker ' .. last .. ')'
  local raw = redis.call('XRANGE', stream, entry, entry)
  local body = ''
  if raw[1] then
    for i = 1, #raw[1][2], 2 do
      if raw[1][2][i] == 'job' then body = raw[1][2][i + 1] end
    end
  end
  local id = string.match(job, 'job:(.*)$') or ''
  local ev = cmsgpack.pack({v = 1, type = 'end', job = id, index = logged, finish_reason = 'error',
                            text = logged_text(log), generated_tokens = logged, prompt_tokens = 0,
                            error = msg, error_type = 'dead_letter'})
  redis.call('HSET', job, 'status', 'failed', 'result', ev, 'finished_ms', now)
  redis.call('RPUSH', log, ev)
  redis.call('PUBLISH', channel, ev)
  redis.call('XADD', dead, '*', 'id', id, 'stream', stream, 'entry', entry, 'error', msg,
             'error_type', 'dead_letter', 'attempts', attempts - 1, 'worker', last, 'job', body)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('PEXPIRE', job, ttl)
  redis.call('PEXPIRE', log, ttl)
  return {'dead'}
end
redis.call('HSET', job, 'status', 'running', 'worker', worker, 'started_ms', now)
return {'run', attempts, logged}
