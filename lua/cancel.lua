-- cancel: stop a queued or running job. A running worker learns of it from
-- its next emit ("cancelled") and drops the job within one step.
-- KEYS: job record, stream, log
-- ARGV: id, channel, group, ttl_ms, now_ms
-- Reply: {"ok"} | {"over", status} | {"missing"}
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

local job, stream, log = KEYS[1], KEYS[2], KEYS[3]
local id, channel, group, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

local rec = redis.call('HMGET', job, 'status', 'entry', 'worker')
local status = rec[1]
if not status then return {'missing'} end
if status ~= 'queued' and status ~= 'running' then return {'over', status} end
local logged = redis.call('LLEN', log)
local ev = {v = 1, type = 'end', job = id, index = logged, finish_reason = 'cancelled', text = logged_text(log),
            generated_tokens = logged, prompt_tokens = 0}
if rec[3] then ev.worker = rec[3] end
local packed = cmsgpack.pack(ev)
redis.call('HSET', job, 'status', 'cancelled', 'result', packed, 'finished_ms', now)
redis.call('RPUSH', log, packed)
redis.call('PUBLISH', channel, packed)
if rec[2] then
  redis.call('XACK', stream, group, rec[2])
  redis.call('XDEL', stream, rec[2])
end
redis.call('PEXPIRE', job, ttl)
redis.call('PEXPIRE', log, ttl)
return {'ok'}
