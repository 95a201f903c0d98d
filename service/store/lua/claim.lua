-- Take over an entry whose holder's heartbeat has expired, or end its job as a dead letter.
-- KEYS: stream, totals, expiry
-- ARGV: prefix, group, consumer, entry, holder, max deliveries, ttl, dead-letter detail,
--       mode ('claim', or 'check': dead-letter if due, never claim)
-- Returns {'moved'} (someone else holds it now), {'alive'}, {'gone', job id}, {'dead', job id},
-- {'claimable', job id}, or {'started', entry, attempt, record}.
local stream, totals, expiry = KEYS[1], KEYS[2], KEYS[3]
local prefix, group, me, entry, holder = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_deliveries, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])

local pending = redis.call('XPENDING', stream, group, entry, entry, 1)[1]
if not pending or pending[2] ~= holder then return {'moved'} end
-- Liveness by heartbeat, never by how long the entry has been pending: an hour-long job on a
-- live replica is never taken away (celery #4976, arq #402, dramatiq #692).
if holder ~= me and redis.call('EXISTS', prefix .. ':replica:' .. holder) == 1 then
  return {'alive'}
end
local fields = entry_fields(stream, entry)
if not fields then
  redis.call('XACK', stream, group, entry)
  return {'gone', ''}
end
local id = fields['id']
local key = job_key(prefix, id)
local record = redis.call('HMGET', key, 'state', 'released')
local state, released = record[1], record[2] == '1'
if not state or is_finished(state) then
  drop_entry(stream, group, entry)
  if not state then leave_totals(totals, tonumber(fields['bytes'] or '0')) end
  return {'gone', id}
end
-- The delivery count comes from the group (XPENDING); an attempt handed back on a graceful
-- stop (released) does not count against the job.
local count = tonumber(pending[4])
if not released and count >= max_deliveries then
  local error_json = cjson.encode({outcome = 'worker_dead', detail = ARGV[8]})
  finish(key, totals, expiry, id, 'failed', ttl, {'error', error_json})
  drop_entry(stream, group, entry)
  return {'dead', id}
end
if ARGV[9] ~= 'claim' then return {'claimable', id} end
local retry = count + 1
if released then retry = count end
redis.call('XCLAIM', stream, group, me, 0, entry, 'RETRYCOUNT', retry)
return {'started', entry, start(key, me, ttl), redis.call('HGETALL', key)}
