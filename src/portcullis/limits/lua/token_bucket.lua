-- Token bucket: `capacity` tokens refilled continuously at limit/period. Tokens
-- are kept in units of 1/unit (unit = period/gcd), so the refill is `rate`
-- (limit/gcd) per microsecond, exactly. State "tokens last_refill_us".
-- Mirrors portcullis.limits.algorithms.token_bucket.

local function token_bucket(raw, now, cost, p)
  local unit, rate, capacity = p.unit, p.rate, p.capacity
  local full = capacity * unit
  local tokens = full
  if raw then
    local s = parse_state(raw)
    tokens = math.min(s[1], full)
    local elapsed = now - s[2]
    if elapsed > 0 then
      if elapsed >= ceil_div(full - tokens, rate) then
        tokens = full
      else
        tokens = tokens + elapsed * rate
      end
    end
  end
  if cost > capacity then
    return 0, floor_div(tokens, unit), next_unit(tokens, unit, rate, full), p.period, false, 0
  end
  local need = cost * unit
  if tokens >= need then
    tokens = tokens - need
    local nxt = next_unit(tokens, unit, rate, full)
    if cost > 0 then
      return 1, floor_div(tokens, unit), nxt, 0, format2(tokens, now), ceil_div(full - tokens, rate)
    end
    return 1, floor_div(tokens, unit), nxt, 0, false, 0
  end
  local nxt = next_unit(tokens, unit, rate, full)
  return 0, floor_div(tokens, unit), nxt, ceil_div(need - tokens, rate), false, 0
end
