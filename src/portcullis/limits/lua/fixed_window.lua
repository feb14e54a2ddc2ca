-- Fixed window: windows aligned to the epoch, at most `limit` units per window.
-- State "window count". Mirrors portcullis.limits.algorithms.fixed_window.
-- Returns allowed (0/1), remaining, reset_after, retry_after, new state or false, ttl.

local function fixed_window(raw, now, cost, p)
  local limit, period = p.limit, p.period
  local window = floor_div(now, period)
  local count = 0
  if raw then
    local s = parse_state(raw)
    if s[1] == window then
      count = s[2]
    end
  end
  local finish = (window + 1) * period - now
  if cost > limit then
    local reset = 0
    if count > 0 then
      reset = finish
    end
    return 0, math.max(0, limit - count), reset, period, false, 0
  end
  if cost <= limit - count then
    count = count + cost
    local reset = 0
    if count > 0 then
      reset = finish
    end
    if cost > 0 then
      return 1, limit - count, reset, 0, format2(window, count), finish
    end
    return 1, limit - count, reset, 0, false, 0
  end
  return 0, math.max(0, limit - count), finish, finish, false, 0
end
