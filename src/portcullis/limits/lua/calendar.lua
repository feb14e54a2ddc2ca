-- Calendar window: one fixed window with explicit bounds (a day or a month in a
-- time zone), named by its key; it ends at p.quantum, which for this algorithm
-- (code 5) carries the window's end instant (see LimitSpec.lua_args).
-- State "count". Mirrors portcullis.limits.algorithms.calendar_window.

local CALENDAR_GRACE = 60000000

local function calendar_window(raw, now, cost, p)
  local limit = p.limit
  local count = 0
  if raw then
    count = parse_state(raw)[1]
  end
  local finish = math.max(p.quantum - now, 0)
  local reset = 0
  if count > 0 then
    reset = finish
  end
  if cost > limit then
    return 0, math.max(0, limit - count), reset, p.period, false, 0
  end
  if cost <= limit - count then
    count = count + cost
    if count > 0 then
      reset = finish
    end
    if cost > 0 then
      return 1, limit - count, reset, 0, string.format('%d', count), finish + CALENDAR_GRACE
    end
    return 1, limit - count, reset, 0, false, 0
  end
  return 0, math.max(0, limit - count), finish, math.max(finish, 1), false, 0
end
