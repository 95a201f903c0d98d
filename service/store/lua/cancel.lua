-- Cancel a job, or delete it. A queued job ends cancelled at once (its entry is skipped when
-- read); a running one is flagged and its replica told on the cancel channel; deleting a running
-- job also ends it, so whatever its replica later writes is refused.
-- KEYS: totals, expiry, job key
-- ARGV: job id, ttl, cancel channel, detail, mode ('cancel' or 'delete')
-- Returns {'missing'}, {'cancelled', previous state}, {'signalled'}, {'finished', state} or
-- {'deleted', state}.
local totals, expiry, key = KEYS[1], KEYS[2], KEYS[3]
local id, ttl, channel, detail, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]

local record = redis.call('HMGET', key, 'state', 'deleted')
local state = record[1]
if not state or record[2] == '1' then return {'missing'} end
if is_finished(state) then
  if mode == 'delete' then
    redis.call('DEL', key)
    redis.call('ZREM', expiry, id)
    return {'deleted', state}
  end
  return {'finished', state}
end
if state == 'running' and mode == 'cancel' then
  redis.call('HSET', key, 'cancel_requested', '1')
  redis.call('PUBLISH', channel, id)
  return {'signalled'}
end
local error_json = cjson.encode({outcome = 'cancelled', detail = detail})
finish(key, totals, expiry, id, 'cancelled', ttl, {'cancel_requested', '1', 'error', error_json})
if state == 'running' then redis.call('PUBLISH', channel, id) end
if mode == 'delete' then
  -- A tombstone: reads answer "no such job", and the entry still finds a finished record.
  redis.call('HSET', key, 'deleted', '1')
end
return {'cancelled', state}
