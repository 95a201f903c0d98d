-- Store a job's record and add its entry, atomically, within the queue's bounds.
-- KEYS: stream, totals, job key
-- ARGV: upload bytes, max jobs, max bytes, ttl, wakeup channel, record field count (pairs),
--       the record's fields, then the entry's fields
local stream, totals, key = KEYS[1], KEYS[2], KEYS[3]
local bytes, max_jobs, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

-- A retried call (the reply to the first was lost) finds its own record: answer as it did.
local existing = redis.call('HMGET', key, 'entry', 'created')
if existing[1] then return {'queued', existing[1], existing[2]} end

local jobs = tonumber(redis.call('HGET', totals, 'jobs') or '0')
local held = tonumber(redis.call('HGET', totals, 'bytes') or '0')
if jobs + 1 > max_jobs then return {'full', 'jobs', tostring(jobs)} end
if held + bytes > max_bytes then return {'full', 'bytes', tostring(held)} end

local pairs_n = tonumber(ARGV[6])
local record, entry = {}, {}
for i = 7, 6 + 2 * pairs_n do record[#record + 1] = ARGV[i] end
for i = 7 + 2 * pairs_n, #ARGV do entry[#entry + 1] = ARGV[i] end

local created = stamp(now())
local id = redis.call('XADD', stream, '*', unpack(entry))
redis.call('HSET', key, 'state', 'queued', 'created', created, 'entry', id, unpack(record))
redis.call('EXPIRE', key, math.ceil(2 * ttl))
redis.call('HINCRBY', totals, 'jobs', 1)
redis.call('HINCRBY', totals, 'bytes', bytes)
redis.call('PUBLISH', ARGV[5], id)
return {'queued', id, created}
