-- Sliding-window counter: the previous window's count weighted by its overlap
-- with the sliding period, plus the current window's count; time in `quantum`
-- steps. State "window current previous".
-- Mirrors portcullis.limits.algorithms.sliding_window.

local function sliding_reset(start, period, now, cur, prev)
  if cur > 0 then
    return start + 2 * period - now
  end
  if prev > 0 then
    return start + period - now
  end
  return 0
end

local function sliding_window(raw, now, cost, p)
  local period, limit, quantum = p.period, p.limit, p.quantum
  local steps = floor_div(period, quantum)
  local window = floor_div(now, period)
  local start = window * period
  local cur, prev = 0, 0
  if raw then
    local s = parse_state(raw)
    if s[1] == window then
      cur, prev = s[2], s[3]
    elseif s[1] == window - 1 then
      prev = s[2]
    end
  end
  local weight = steps - floor_div(now - start, quantum)
  local budget = limit * steps
  local used = prev * weight + cur * steps
  if cost > limit then
    local reset = sliding_reset(start, period, now, cur, prev)
    return 0, math.max(0, floor_div(budget - used, steps)), reset, period, false, 0
  end
  if used + cost * steps <= budget then
    cur = cur + cost
    used = used + cost * steps
    local reset = sliding_reset(start, period, now, cur, prev)
    local remaining = floor_div(budget - used, steps)
    if cost > 0 then
      return 1, remaining, reset, 0, format3(window, cur, prev), start + 2 * period - now
    end
    return 1, remaining, reset, 0, false, 0
  end
  local at = start + 2 * period
  local slack = budget - (cur + cost) * steps
  local found = false
  if slack >= 0 and prev > 0 then
    local step = steps - floor_div(slack, prev)
    if step < steps then
      at = start + step * quantum
      found = true
    end
  end
  if not found then
    if cur == 0 then
      at = start + period
    else
      local step = math.max(0, steps - floor_div((limit - cost) * steps, cur))
      if step < steps then
        at = start + period + step * quantum
      end
    end
  end
  local reset = sliding_reset(start, period, now, cur, prev)
  return 0, math.max(0, floor_div(budget - used, steps)), reset, at - now, false, 0
end
