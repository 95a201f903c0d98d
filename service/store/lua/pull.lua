-- Look at the next undelivered entry; take it only if it is the one the caller admitted.
-- Entries of cancelled or vanished jobs on the way are acknowledged and skipped.
-- KEYS: stream, totals
-- ARGV: prefix, group, consumer, admitted entry id ('' for none yet), ttl
-- Returns {'head', entry, fields, skipped} (admit it, then call again), {'started', entry,
-- attempt, record, skipped} or {'empty' | 'busy', skipped}; `skipped` lists the jobs whose
-- records had expired (their objects are the caller's to delete).
local stream, totals = KEYS[1], KEYS[2]
local prefix, group, me, admitted = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[5])

local function last_delivered()
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = fields_map(g)
    if info['name'] == group then return info['last-delivered-id'] end
  end
  error({err = 'NOGROUP no consumer group ' .. group})
end

local skipped = {}
for _ = 1, 32 do
  local head = redis.call('XRANGE', stream, '(' .. last_delivered(), '+', 'COUNT', 1)[1]
  if not head then return {'empty', skipped} end
  local entry, fields = head[1], fields_map(head[2])
  local key = job_key(prefix, fields['id'])
  local state = redis.call('HGET', key, 'state')
  if state == 'queued' and entry ~= admitted then return {'head', entry, head[2], skipped} end
  redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', stream, '>')
  if state == 'queued' then
    return {'started', entry, start(key, me, ttl), redis.call('HGETALL', key), skipped}
  end
  drop_entry(stream, group, entry)
  if not state then
    leave_totals(totals, tonumber(fields['bytes'] or '0'))
    skipped[#skipped + 1] = fields['id']
  end
end
return {'busy', skipped}
