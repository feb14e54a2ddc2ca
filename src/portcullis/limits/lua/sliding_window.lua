-- Sliding-window counter: the previous window's count weighted by its overlap
-- with the sliding period, plus the current window's count; time in `quantum`
-- steps. State "window current previous".
-- Mirrors portcullis.limits.algorithms.sliding_window.

-- Microseconds until one unit more than `remaining` fits (0 when nothing is
-- spent). Mirrors portcullis.limits.algorithms._sliding_next.
local function sliding_next(start, p, now, cur, prev, remaining)
  local period, quantum, limit = p.period, p.quantum, p.limit
  local steps = floor_div(period, quantum)
  if remaining >= limit or (cur == 0 and prev == 0) then
    return 0
  end
  local target = (limit - remaining - 1) * steps
  if prev > 0 and target >= cur * steps then
    local step = math.max(steps - floor_div(target - cur * steps, prev),
      floor_div(now - start, quantum) + 1)
    if step < steps then
      return start + step * quantum - now
    end
  end
  local step = 0
  if cur > 0 then
    step = math.max(0, steps - floor_div(target, cur))
  end
  return start + period + math.min(step, steps) * quantum - now
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
    local left = math.max(0, floor_div(budget - used, steps))
    return 0, left, sliding_next(start, p, now, cur, prev, left), period, false, 0
  end
  if used + cost * steps <= budget then
    cur = cur + cost
    used = used + cost * steps
    local remaining = floor_div(budget - used, steps)
    local nxt = sliding_next(start, p, now, cur, prev, remaining)
    if cost > 0 then
      return 1, remaining, nxt, 0, format3(window, cur, prev), start + 2 * period - now
    end
    return 1, remaining, nxt, 0, false, 0
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
  local left = math.max(0, floor_div(budget - used, steps))
  return 0, left, sliding_next(start, p, now, cur, prev, left), at - now, false, 0
end
