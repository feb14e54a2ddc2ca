-- Shared helpers for the rate-limit script (see decide.lua).
--
-- Redis runs Lua 5.1, whose numbers are IEEE doubles: integers are exact up to
-- 2^53, and LimitSpec keeps every quantity below that. Integer division must not
-- trust a rounded quotient, so divmod corrects it by one step either way.

local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
    r = r + b
  elseif r >= b then
    q = q + 1
    r = r - b
  end
  return q, r
end

local function floor_div(a, b)
  local q = divmod(a, b)
  return q
end

local function ceil_div(a, b)
  local q = divmod(-a, b)
  return -q
end

-- Microseconds until a meter at `level` (in 1/unit, refilled at `rate` per
-- microsecond, capped at `full`) holds one more whole unit; 0 when full.
-- Mirrors portcullis.limits.algorithms._next_unit.
local function next_unit(level, unit, rate, full)
  if level >= full then
    return 0
  end
  return ceil_div((math.max(floor_div(level, unit), 0) + 1) * unit - level, rate)
end

-- A stored state: space-separated integers.
local function parse_state(raw)
  local values = {}
  for word in string.gmatch(raw, '%-?%d+') do
    values[#values + 1] = tonumber(word)
  end
  return values
end

-- %d, not tostring: tostring keeps only 14 significant digits.
local function format2(a, b)
  return string.format('%d %d', a, b)
end

local function format3(a, b, c)
  return string.format('%d %d %d', a, b, c)
end
