-- From the attempt that holds a job: keep its record alive, record progress, learn of a cancel.
-- KEYS: job key
-- ARGV: consumer, attempt, progress JSON ('' for none), ttl
-- Returns 'ok', 'cancel' (stop: cancel requested) or 'lost' (this attempt no longer holds it).
local record = redis.call('HMGET', KEYS[1], 'state', 'owner', 'deliveries', 'cancel_requested')
if record[1] ~= 'running' or record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then return 'lost' end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[4])))
if record[4] == '1' then return 'cancel' end
return 'ok'
