-- Housekeeping, atomic: take the jobs whose expiry is due (one replica deletes each), correct
-- the totals when no job can be queued or running, and drop dead consumers that hold nothing.
-- KEYS: stream, totals, expiry
-- ARGV: prefix, group, how many due jobs to take at most
-- Returns the due job ids.
local stream, totals, expiry = KEYS[1], KEYS[2], KEYS[3]
local prefix, group = ARGV[1], ARGV[2]

local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', stamp(now()), 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then redis.call('ZREM', expiry, unpack(due)) end

-- Every job queued or running has an entry in the stream, so an empty stream means the totals
-- are zero. They can drift only if a deleted job's tombstone expired before its entry was read.
if redis.call('EXISTS', stream) == 0 or redis.call('XLEN', stream) == 0 then
  redis.call('HSET', totals, 'jobs', 0, 'bytes', 0)
end

-- Never delete a consumer that holds entries: XGROUP DELCONSUMER drops its pending entries,
-- and nobody could claim them any more.
if redis.call('EXISTS', stream) == 1 then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local info = fields_map(c)
    if tonumber(info['pending']) == 0
        and redis.call('EXISTS', prefix .. ':replica:' .. info['name']) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
    end
  end
end
return due
