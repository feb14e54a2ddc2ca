-- One rate-limit decision: every limit of one request, atomically, all-or-nothing.
--
-- KEYS[i]: the state of limit i (all in one hash slot: they share a {tag}).
-- ARGV, 8 per limit: algorithm code, limit, period_us, capacity, unit, rate,
-- quantum_us (a calendar window's end), cost (see LimitSpec.lua_args).
-- The clock is the server's (TIME), the same for every node. If any limit refuses,
-- nothing is written, and the limits that would have admitted the request report
-- their state without it. Every written key gets a TTL after which its state no
-- longer matters.
-- Reply: {all_allowed, then per limit: allowed, remaining, reset_after_us, retry_after_us}.

local ALGORITHMS = {fixed_window, sliding_window, token_bucket, gcra, calendar_window}

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = #KEYS
local params, costs, raws, outcomes = {}, {}, {}, {}
local all_allowed = 1

for i = 1, n do
  local b = (i - 1) * 8
  local p = {
    code = tonumber(ARGV[b + 1]),
    limit = tonumber(ARGV[b + 2]),
    period = tonumber(ARGV[b + 3]),
    capacity = tonumber(ARGV[b + 4]),
    unit = tonumber(ARGV[b + 5]),
    rate = tonumber(ARGV[b + 6]),
    quantum = tonumber(ARGV[b + 7]),
  }
  local cost = tonumber(ARGV[b + 8])
  local raw = redis.call('GET', KEYS[i])
  local allowed, remaining, reset, retry, state, ttl = ALGORITHMS[p.code](raw, now, cost, p)
  params[i], costs[i], raws[i] = p, cost, raw
  outcomes[i] = {allowed, remaining, reset, retry, state, ttl}
  if allowed == 0 then
    all_allowed = 0
  end
end

local reply = {all_allowed}
for i = 1, n do
  local o = outcomes[i]
  if all_allowed == 1 then
    if o[5] then
      redis.call('SET', KEYS[i], o[5], 'PX', math.max(1, ceil_div(o[6], 1000)))
    end
  elseif o[1] == 1 then
    local p = params[i]
    local allowed, remaining, reset, retry = ALGORITHMS[p.code](raws[i], now, 0, p)
    o = {allowed, remaining, reset, retry}
  end
  reply[#reply + 1] = o[1]
  reply[#reply + 1] = o[2]
  reply[#reply + 1] = o[3]
  reply[#reply + 1] = o[4]
end
return reply
