-- Stores a run's outcome over the one stored already, if dmq_core::may_replace allows:
-- a success is replaced only by the run that stored it (the same fence), a failure or
-- an expiry by that run or a later one (a greater fence), never by an earlier one.
-- Run only when a `SET ... NX` of the outcome found a value there (see
-- src/backend.rs); not prefixed with lib.lua.
-- An outcome is a MessagePack map whose first entries are `fence` (an unsigned
-- integer) and `state` (a string); they are read here without decoding the rest,
-- which may hold binary values. A value stored without a fence counts as fence 0, and
-- one whose state cannot be read is replaced.
-- KEYS: 1 the result key
-- ARGV: 1 the encoded outcome, 2 ttl (ms), 3 fence
-- Returns: 1 when stored, 0 when the stored outcome stays

-- The fence and state at the front of an encoded outcome (nil where unreadable).
local function front(v)
  local b = string.byte(v, 1)
  local pos
  if b and b >= 0x80 and b <= 0x8f then pos = 2
  elseif b == 0xde then pos = 4
  elseif b == 0xdf then pos = 6
  else return nil, nil end
  local fence, state = 0, nil
  for _ = 1, 2 do
    local klen = (string.byte(v, pos) or 0) - 0xa0
    if klen < 1 or klen > 31 then break end
    local key = string.sub(v, pos + 1, pos + klen)
    pos = pos + 1 + klen
    local t = string.byte(v, pos)
    if not t then break end
    if key == 'fence' then
      local n = 0
      if t <= 0x7f then n = 0
      elseif t == 0xcc then n = 1
      elseif t == 0xcd then n = 2
      elseif t == 0xce then n = 4
      elseif t == 0xcf then n = 8
      else break end
      if n == 0 then
        fence = t
      else
        fence = 0
        for i = 1, n do fence = fence * 256 + string.byte(v, pos + i) end
      end
      pos = pos + 1 + n
    elseif key == 'state' then
      local slen = t - 0xa0
      if slen < 0 or slen > 31 then break end
      state = string.sub(v, pos + 1, pos + slen)
      pos = pos + 1 + slen
    else
      break
    end
  end
  return fence, state
end

local fence = tonumber(ARGV[3])
local old = redis.call('GET', KEYS[1])
if old then
  local stored_fence, state = front(old)
  if state == 'succeeded' then
    if stored_fence ~= fence then return 0 end
  elseif state and stored_fence > fence then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
