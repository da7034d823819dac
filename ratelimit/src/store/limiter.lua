-- brisk-ratelimit: every policy of one request, decided atomically.
--
-- KEYS[i]  state of policy i; all keys share one hash tag (one cluster slot)
-- ARGV[1]  operation: 0 consume (all-or-nothing), 1 peek, 2 refund
-- ARGV[2]  cost
-- ARGV[3i], ARGV[3i+1], ARGV[3i+2]  policy i: algorithm (1 gcra, 2 fixed window,
--          3 sliding window), then gcra: emission interval (us), burst;
--          windows: limit, window (us)
--
-- A batch of several requests' decisions: ARGV[1] 3, ARGV[2] the number of
-- decisions D, ARGV[3] the number of policy shapes S (the policies of one
-- limiter: sent once however many of its decisions the batch holds), then
-- per shape its number of policies m and its policies' 3m values as above,
-- then per decision (shape index from 0 * 4 + operation) * 2^32 + cost.
-- KEYS holds the decisions' keys in order (on Redis Cluster: all in one
-- slot). Replies {now, then per decision: allowed, then per policy the four
-- values below}.
--
-- A uniform batch (every decision one GCRA policy of the same emission
-- interval and burst, consumed at the same cost: one limiter's decisions
-- under load): ARGV[1] 4, ARGV[2] the cost, ARGV[3] the emission interval
-- (us), ARGV[4] the burst; KEYS the decisions' keys in order (a key may
-- repeat). Replies per decision reset_after * 2 + allowed: the client derives
-- remaining and retry_after from them as src/algorithm.rs does.
--
-- State: gcra the theoretical arrival time as an 8-byte little-endian double
-- (struct.pack '<d'; an integer number of microseconds below 2^52: anything
-- else reads as no state); windows "index current previous" (microseconds).
-- Replies {allowed, now, then per policy: allowed, remaining, reset_after, retry_after (-1: none)}.
-- Must compute exactly as src/algorithm.rs: integers below 2^53 only.
-- Numbers handed to redis.call are formatted with '%d' first: Lua would
-- format them as '%.14g', a slower float conversion. The GCRA state is binary
-- because decimal cost a third of a batched decision in Redis (callgrind):
-- tonumber runs strtod twice, and a pattern check and a '%d' format more.
-- Writes with a TTL use PSETEX: SET's option parsing is skipped.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local op = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS

-- The common case first, before any helper below is defined: one GCRA
-- policy, consumed, with the arithmetic of `gcra`, `read` and `store` inline.
-- Each helper defined before it would be a new closure per call: calling
-- `gcra` from here cost about 1,500 more instructions per call in Redis
-- (callgrind), some 2% of the EVALSHA.
if n == 1 and op == 0 and ARGV[3] == '1' then
  local t = tonumber(ARGV[4])
  local burst = tonumber(ARGV[5])
  local base = now
  local raw = redis.call('GET', KEYS[1])
  if raw and #raw == 8 then
    local tat = struct.unpack('<d', raw)
    if tat > now and tat < 4503599627370496 and tat % 1 == 0 then base = tat end
  end
  local capacity = t * burst
  local new_tat = base + t * cost
  local allowed, left, reset, retry = 1, capacity - (new_tat - now), new_tat - now, -1
  if left < 0 then
    allowed, left, reset = 0, math.max(capacity - (base - now), 0), base - now
    if cost <= burst then retry = new_tat - capacity - now end
  end
  local remaining = math.floor(left / t)
  if remaining * t > left then remaining = remaining - 1 end
  if (remaining + 1) * t <= left then remaining = remaining + 1 end
  if allowed == 1 then
    local ttl_ms = math.floor(reset / 1000)
    if ttl_ms * 1000 < reset then ttl_ms = ttl_ms + 1 end
    if (ttl_ms - 1) * 1000 >= reset and ttl_ms > 0 then ttl_ms = ttl_ms - 1 end
    if ttl_ms > 0 then
      redis.call('PSETEX', KEYS[1], string.format('%d', ttl_ms), struct.pack('<d', new_tat))
    else
      redis.call('DEL', KEYS[1])
    end
  end
  return { allowed, now, allowed, remaining, reset, retry }
end

if op == 4 then
  local t, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
  local capacity, step = t * burst, t * cost
  -- Each key's time (false: none) as the batch's decisions move it, and the
  -- keys to write with their final time.
  local tats, dirty = {}, {}
  for i = 1, n, 256 do
    local last = math.min(i + 255, n)
    local values = redis.call('MGET', unpack(KEYS, i, last))
    for j = i, last do
      local raw, tat = values[j - i + 1], false
      if raw and #raw == 8 then
        tat = struct.unpack('<d', raw)
        if not (tat >= 0 and tat < 4503599627370496 and tat % 1 == 0) then tat = false end
      end
      tats[KEYS[j]] = tat
    end
  end
  local reply = {}
  for j = 1, n do
    local key = KEYS[j]
    local tat = tats[key]
    local base = now
    if tat and tat > now then base = tat end
    local new_tat = base + step
    if new_tat - now <= capacity then
      tats[key] = new_tat
      dirty[key] = new_tat
      reply[j] = (new_tat - now) * 2 + 1
    else
      reply[j] = (base - now) * 2
    end
  end
  -- An admitted decision moved its key's time at least one microsecond past now.
  for key, tat in next, dirty do
    local ttl = tat - now
    local ttl_ms = math.floor(ttl / 1000)
    if ttl_ms * 1000 < ttl then ttl_ms = ttl_ms + 1 end
    redis.call('PSETEX', key, string.format('%d', ttl_ms), struct.pack('<d', tat))
  end
  return reply
end

local function ceil_div(a, b)
  local q = math.floor(a / b)
  if q * b < a then q = q + 1 end
  if (q - 1) * b >= a and q > 0 then q = q - 1 end
  return q
end

local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  if (q + 1) * b <= a then q = q + 1 end
  return q
end

-- GCRA at `now` for cost c from the stored theoretical arrival time (nil:
-- none): allowed, remaining, reset_after, retry_after, the time to store.
local function gcra(tat, t, burst, c)
  local base = math.max(tat or now, now)
  local capacity = t * burst
  local new_tat = base + t * c
  local allowed, left, reset, retry, next_tat = 1, capacity - (new_tat - now), new_tat - now, -1, new_tat
  if left < 0 then
    allowed, left, reset, next_tat = 0, math.max(capacity - (base - now), 0), base - now, base
    if c <= burst then retry = new_tat - capacity - now end
  end
  local remaining = math.floor(left / t)
  if remaining * t > left then remaining = remaining - 1 end
  if (remaining + 1) * t <= left then remaining = remaining + 1 end
  return allowed, remaining, reset, retry, next_tat
end

-- In a batch, every key is read once up front (MGET) and written once at the
-- end: `current` holds each key's value as the batch's decisions change it
-- (false: no value), `expiry` how to write it (ms to live; -1 keep the key's
-- TTL; -2 none, after a delete), `order` the keys written. Outside a batch
-- (`current` nil) reads and writes go to Redis at once.
local current, expiry, order = nil, nil, nil

local function get(key)
  if current then return current[key] end
  return redis.call('GET', key)
end

-- Writes `value` (false: deletes) to live `ttl_ms` (nil: keeps the key's TTL).
local function put(key, value, ttl_ms)
  if not current then
    if not value then
      redis.call('DEL', key)
    elseif ttl_ms then
      redis.call('PSETEX', key, string.format('%d', ttl_ms), value)
    else
      redis.call('SET', key, value, 'KEEPTTL')
    end
    return
  end
  if expiry[key] == nil then order[#order + 1] = key end
  current[key] = value
  if not value then
    expiry[key] = -2
  elseif ttl_ms then
    expiry[key] = ttl_ms
  elseif expiry[key] == nil then
    expiry[key] = -1
  end
end

local function read(key, algo)
  local raw = get(key)
  if not raw then return nil end
  if algo == 1 then
    if #raw ~= 8 then return nil end
    local tat = struct.unpack('<d', raw)
    if tat >= 0 and tat < 4503599627370496 and tat % 1 == 0 then return tat end
    return nil
  end
  local i, c, p = string.match(raw, '^(%d+) (%d+) (%d+)$')
  if not i then return nil end
  return { tonumber(i), tonumber(c), tonumber(p) }
end

-- Returns allowed, remaining, reset_after, retry_after, next state string, expires_at.
local function evaluate(algo, a, b, state, c)
  if algo == 1 then
    local allowed, remaining, reset, retry, tat = gcra(state, a, b, c)
    return allowed, remaining, reset, retry, struct.pack('<d', tat), tat
  end
  local limit, window = a, b
  local index = floor_div(now, window)
  local elapsed = now - index * window
  local current, previous = 0, 0
  if state then
    if state[1] == index then
      current, previous = state[2], state[3]
    elseif state[1] + 1 == index and algo == 3 then
      previous = state[2]
    end
  end
  if algo == 2 then
    local window_end = (index + 1) * window
    local allowed = current + c <= limit
    local used = current
    if allowed then used = current + c end
    local reset = 0
    if used > 0 then reset = window_end - now end
    local retry = -1
    if not allowed and c <= limit then retry = window_end - now end
    return allowed and 1 or 0, math.max(limit - used, 0), reset, retry,
      string.format('%d %d 0', index, used), window_end
  end
  local weighted = ceil_div(previous * (window - elapsed), window)
  local used = current + weighted
  local allowed = used + c <= limit
  local new_current = current
  if allowed then new_current = current + c end
  local retry = -1
  if not allowed and c <= limit then
    if current + c <= limit then
      retry = window - floor_div((limit - current - c) * window, previous) - elapsed
    else
      retry = (window - elapsed) + (window - floor_div((limit - c) * window, current))
    end
  end
  local reset = 0
  if new_current > 0 then reset = 2 * window - elapsed elseif previous > 0 then reset = window - elapsed end
  local remaining = limit - used
  if allowed then remaining = remaining - c end
  return allowed and 1 or 0, math.max(remaining, 0), reset, retry,
    string.format('%d %d %d', index, new_current, previous), (index + 2) * window
end

local function store(key, value, expires_at)
  local ttl_ms = ceil_div(expires_at - now, 1000)
  if ttl_ms > 0 then put(key, value, ttl_ms) else put(key, false) end
end

-- Decides one request's n policies (KEYS[k0+i]; algorithm, a, b from
-- params[p0+3(i-1)] on) into `reply`: its allowed flag at `at`, policy i's
-- four values from first+4(i-1).
local function decide(k0, n, op, cost, params, p0, reply, at, first)
  reply[at] = 1
  local pending = {}
  for i = 1, n do
    local key = KEYS[k0 + i]
    local p = p0 + 3 * (i - 1)
    local algo, a, b = params[p], params[p + 1], params[p + 2]
    local state = read(key, algo)
    local r = first + 4 * (i - 1)
    if op == 2 then
      -- Refund: give units back, then answer as a peek of cost 0.
      if state then
        if algo == 1 then
          local tat = math.max(state - a * cost, now)
          if tat > now then store(key, struct.pack('<d', tat), tat) else put(key, false) end
          state = tat
        else
          local index = floor_div(now, b)
          if state[1] == index or (algo == 3 and state[1] + 1 == index) then
            state[2] = math.max(state[2] - cost, 0)
            put(key, string.format('%d %d %d', state[1], state[2], state[3]))
          end
        end
      end
      local ok, remaining, reset, retry = evaluate(algo, a, b, state, 0)
      reply[r] = ok
      reply[r + 1] = remaining
      reply[r + 2] = reset
      reply[r + 3] = retry
    else
      local ok, remaining, reset, retry, value, expires_at = evaluate(algo, a, b, state, cost)
      if ok == 0 then reply[at] = 0 end
      reply[r] = ok
      reply[r + 1] = remaining
      reply[r + 2] = reset
      reply[r + 3] = retry
      pending[i] = { value, expires_at, algo, a, b, state }
    end
  end
  if op ~= 2 and reply[at] == 0 then
    -- Nothing is charged: policies that would admit report their untouched state.
    for i = 1, n do
      local r = first + 4 * (i - 1)
      if reply[r] == 1 then
        local p = pending[i]
        local _, remaining, reset, retry = evaluate(p[3], p[4], p[5], p[6], 0)
        reply[r + 1] = remaining
        reply[r + 2] = reset
        reply[r + 3] = retry
      end
    end
  end
  if op == 0 and reply[at] == 1 then
    for i = 1, n do
      store(KEYS[k0 + i], pending[i][1], pending[i][2])
    end
  end
end

-- One GCRA policy consumed, in a general batch: `decide` without its tables
-- (a uniform batch, the common case, is decided above without any helper).
local function consume_one(key, t, burst, c, reply)
  local tat = read(key, 1)
  local allowed, remaining, reset, retry, new_tat = gcra(tat, t, burst, c)
  if allowed == 1 then
    local ttl_ms = ceil_div(reset, 1000)
    if ttl_ms > 0 then put(key, struct.pack('<d', new_tat), ttl_ms) else put(key, false) end
  end
  local i = #reply
  reply[i + 1] = allowed
  reply[i + 2] = allowed
  reply[i + 3] = remaining
  reply[i + 4] = reset
  reply[i + 5] = retry
end

if op == 3 then
  -- A batch: each decision atomic and all-or-nothing on its own, decided in
  -- order, so a later decision on the same key sees the earlier one's charge.
  current, expiry, order = {}, {}, {}
  local keys = #KEYS
  for i = 1, keys, 256 do
    local last = math.min(i + 255, keys)
    local values = redis.call('MGET', unpack(KEYS, i, last))
    for j = i, last do current[KEYS[j]] = values[j - i + 1] end
  end
  local shapes = {}
  local a = 4
  for s = 1, tonumber(ARGV[3]) do
    local m = tonumber(ARGV[a])
    local shape = { m }
    for j = 1, 3 * m do shape[j + 1] = tonumber(ARGV[a + j]) end
    shapes[s] = shape
    a = a + 1 + 3 * m
  end
  local reply = { now }
  local k = 0
  for d = 0, tonumber(ARGV[2]) - 1 do
    -- (shape index * 4 + operation) * 2^32 + cost, exact in a double
    local code = tonumber(ARGV[a + d])
    local c = code % 4294967296
    local rest = (code - c) / 4294967296
    local d_op = rest % 4
    local shape = shapes[(rest - d_op) / 4 + 1]
    local m = shape[1]
    if m == 1 and d_op == 0 and shape[2] == 1 then
      consume_one(KEYS[k + 1], shape[3], shape[4], c, reply)
    else
      decide(k, m, d_op, c, shape, 2, reply, #reply + 1, #reply + 2)
    end
    k = k + m
  end
  for _, key in ipairs(order) do
    local value, e = current[key], expiry[key]
    if not value then
      redis.call('DEL', key)
    elseif e > 0 then
      redis.call('PSETEX', key, string.format('%d', e), value)
    elseif e == -1 then
      redis.call('SET', key, value, 'KEEPTTL')
    else
      redis.call('SET', key, value)
    end
  end
  return reply
end

local params = {}
for j = 3, 2 + 3 * n do params[j - 2] = tonumber(ARGV[j]) end
local reply = { 1, now }
decide(0, n, op, cost, params, 1, reply, 1, 3)
return reply
