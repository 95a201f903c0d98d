-- End a job from the attempt that holds it (done, failed, cancelled), or hand it back (queued).
-- Only the holding attempt (owner and attempt number) may: a replica whose job was claimed
-- while it looked dead learns it here and writes nothing. XACK comes last.
-- KEYS: stream, totals, expiry
-- ARGV: prefix, group, consumer, job id, attempt, entry, target state, ttl, then field pairs
-- Returns {target} (this attempt did it), {'finished', state} (someone else ended the job),
-- {'superseded', state} (another attempt holds it), {'gone'} (no record) or {'released'}.
local stream, totals, expiry = KEYS[1], KEYS[2], KEYS[3]
local prefix, group, me, id, attempt = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local entry, target, ttl = ARGV[6], ARGV[7], tonumber(ARGV[8])
local key = job_key(prefix, id)
local token = me .. '/' .. attempt

local record = redis.call('HMGET', key, 'state', 'owner', 'deliveries', 'finished_by')
local state = record[1]
if not state then
  local fields = entry_fields(stream, entry)
  if fields then leave_totals(totals, tonumber(fields['bytes'] or '0')) end
  drop_entry(stream, group, entry)
  return {'gone'}
end
-- A retried call (the reply to the first was lost): this attempt already ended the job.
if record[4] == token then return {state} end
if state ~= 'running' or record[2] ~= me or record[3] ~= attempt then
  if is_finished(state) then
    local pending = redis.call('XPENDING', stream, group, entry, entry, 1)[1]
    if pending and pending[2] == me then drop_entry(stream, group, entry) end
    return {'finished', state}
  end
  return {'superseded', state}
end
if target == 'queued' then
  redis.call('HSET', key, 'state', 'queued', 'owner', '', 'released', '1')
  redis.call('HDEL', key, 'progress')
  return {'released'}
end
local extra = {'finished_by', token}
for i = 9, #ARGV do extra[#extra + 1] = ARGV[i] end
finish(key, totals, expiry, id, target, ttl, extra)
drop_entry(stream, group, entry)
return {target}
