-- Shared by every script of the shared job store: scripts.py prepends it to each.
-- Job and heartbeat keys are computed here from the prefix, so one deployment's keys must live
-- on one Redis node (standalone, or a primary with replicas; not a cluster).

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function stamp(t)
  return string.format('%.6f', t)
end

local function fields_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

local function job_key(prefix, id)
  return prefix .. ':job:' .. id
end

local function is_finished(state)
  return state == 'done' or state == 'failed' or state == 'cancelled'
end

-- The totals count the jobs queued or running and their upload bytes: the queue's bounds.
-- A job leaves them once: when its record reaches a final state, or when its entry is found
-- with no record at all (expired or lost).
local function leave_totals(totals, bytes)
  if redis.call('HINCRBY', totals, 'jobs', -1) < 0 then
    redis.call('HSET', totals, 'jobs', 0)
  end
  if redis.call('HINCRBY', totals, 'bytes', -bytes) < 0 then
    redis.call('HSET', totals, 'bytes', 0)
  end
end

-- Acknowledge a delivered entry and take it out of the stream. Only delivered entries are ever
-- deleted: XDEL of an undelivered one leaves the group's `lag` nil or over-counted in Redis 7.0,
-- and KEDA's redis-streams scaler and our metrics read it.
local function drop_entry(stream, group, entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

-- The ticket fields of a stream entry, or nil when the entry is no longer in the stream.
local function entry_fields(stream, entry)
  local found = redis.call('XRANGE', stream, entry, entry)[1]
  if found then return fields_map(found[2]) end
  return nil
end

-- Move a record to a final state: stamp it, schedule its expiry, leave the totals. The record
-- outlives its expiry by one TTL, so the reaper (which deletes the objects first, then the
-- record) runs before Redis drops the record by itself.
local function finish(key, totals, expiry, id, state, ttl, extra)
  local t = now()
  local bytes = tonumber(redis.call('HGET', key, 'upload_bytes') or '0')
  redis.call('HSET', key, 'state', state, 'finished', stamp(t), 'owner', '', unpack(extra))
  redis.call('HDEL', key, 'released')
  redis.call('EXPIRE', key, math.ceil(2 * ttl))
  redis.call('ZADD', expiry, stamp(t + ttl), id)
  leave_totals(totals, bytes)
end

-- Hand the record to a consumer's new attempt; its attempt number fences every later write.
local function start(key, me, ttl)
  local attempt = redis.call('HINCRBY', key, 'deliveries', 1)
  redis.call('HSET', key, 'state', 'running', 'owner', me, 'started', stamp(now()))
  redis.call('HDEL', key, 'released', 'progress')
  redis.call('EXPIRE', key, math.ceil(2 * ttl))
  return tostring(attempt)
end
