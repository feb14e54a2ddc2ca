-- GCRA: one theoretical arrival time (TAT) per key, advanced by
-- cost * period / limit per admitted request; a request passes when
-- TAT - capacity * period / limit <= now. The TAT is kept as whole microseconds
-- plus a fraction in units of 1/rate microseconds, so nothing is rounded.
-- State "tat_us tat_fraction". Mirrors portcullis.limits.algorithms.gcra.

local function gcra(raw, now, cost, p)
  local unit, rate, capacity = p.unit, p.rate, p.capacity
  local tat, frac = now, 0
  if raw then
    local s = parse_state(raw)
    if s[1] >= now then
      tat, frac = s[1], s[2]
    end
  end
  local span = capacity * unit
  local level = (now - tat) * rate - frac + span
  if cost > capacity then
    local nxt = next_unit(level, unit, rate, span)
    return 0, math.max(0, floor_div(level, unit)), nxt, p.period, false, 0
  end
  local carry, new_frac = divmod(frac + cost * unit, rate)
  local new_tat = tat + carry
  local tol_us, tol_frac = divmod(span, rate)
  local at_us, at_frac = new_tat - tol_us, new_frac - tol_frac
  if at_frac < 0 then
    at_us, at_frac = at_us - 1, at_frac + rate
  end
  if at_us < now or (at_us == now and at_frac == 0) then
    local new_level = (now - new_tat) * rate - new_frac + span
    local nxt = next_unit(new_level, unit, rate, span)
    local refill = new_tat - now
    if new_frac > 0 then
      refill = refill + 1
    end
    if cost > 0 then
      return 1, floor_div(new_level, unit), nxt, 0, format2(new_tat, new_frac), refill
    end
    return 1, floor_div(new_level, unit), nxt, 0, false, 0
  end
  local retry = at_us - now
  if at_frac > 0 then
    retry = retry + 1
  end
  local nxt = next_unit(level, unit, rate, span)
  return 0, math.max(0, floor_div(level, unit)), nxt, retry, false, 0
end
