-- The Lua peer of sticky-canary for `make bench`: the same routing decision in Envoy's Lua filter
-- (envoy.filters.http.lua, LuaJIT / Lua 5.1), as a user would write it instead of the wasm filter.
--
-- Published algorithm (README "The decision"):
--   1. input = salt .. session key;
--   2. h = MurmurHash3 x86_32(input, seed 0);
--   3. position = (h × total_weight) >> 32;
--   4. the first version, in config order, whose cumulative weight is > position.
-- Session key: cookie `session_id` (first occurrence, trimmed, unquoted, non-empty), else header
-- `x-user-id` (trimmed, non-empty), else the default version. The request header
-- `x-canary-version` is SET (replacing what the client sent) and the route cache cleared, so the
-- router matches on the choice; the response gets `x-canary-version` too.
--
-- Same configuration as the sticky-canary bench variants (envoy/bench/filter-*.yaml). `make test`
-- checks that this script and the filter route a set of keys identically under Envoy
-- (tools/tests/bench_configs.rs).

local CONFIG = {
  salt = "checkout-2026-11",
  versions = { { name = "canary", weight = 5 }, { name = "stable", weight = 95 } },
  default_version = "stable",
  cookie = "session_id",
  header = "x-user-id",
  route_header = "x-canary-version",
  response_header = "x-canary-version",
}

local bit = bit or require("bit")
local band, bor, bxor = bit.band, bit.bor, bit.bxor
local lshift, rshift, rol, tobit = bit.lshift, bit.rshift, bit.rol, bit.tobit
local byte, find, sub, match = string.byte, string.find, string.sub, string.match
local floor = math.floor

-- Cumulative weights, computed once when the script loads.
local CUMULATIVE, TOTAL = {}, 0
for i, v in ipairs(CONFIG.versions) do
  TOTAL = TOTAL + v.weight
  CUMULATIVE[i] = TOTAL
end

-- a × b mod 2^32 as an int32. Doubles hold 53 bits, so the product is split into 16-bit halves:
-- each partial product stays below 2^49, within the exact range of bit.tobit.
local function mul32(a, b)
  local lo = band(a, 0xffff)
  local hi = rshift(a, 16)
  return tobit(lo * b + lshift(tobit(hi * b), 16))
end

local C1, C2 = tobit(0xcc9e2d51), tobit(0x1b873593)

-- MurmurHash3 x86_32; returns the hash as an unsigned number in [0, 2^32).
local function murmur3_32(s, seed)
  local h = tobit(seed)
  local len = #s
  local nblocks = floor(len / 4)
  for i = 0, nblocks - 1 do
    local b1, b2, b3, b4 = byte(s, i * 4 + 1, i * 4 + 4)
    local k = bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
    k = mul32(rol(mul32(k, C1), 15), C2)
    h = rol(bxor(h, k), 13)
    h = tobit(mul32(h, 5) + 0xe6546b64)
  end
  local tail = nblocks * 4
  local rem = len - tail
  if rem > 0 then
    local k = 0
    if rem == 3 then k = bxor(k, lshift(byte(s, tail + 3), 16)) end
    if rem >= 2 then k = bxor(k, lshift(byte(s, tail + 2), 8)) end
    k = bxor(k, byte(s, tail + 1))
    h = bxor(h, mul32(rol(mul32(k, C1), 15), C2))
  end
  h = bxor(h, len)
  h = bxor(h, rshift(h, 16))
  h = mul32(h, 0x85ebca6b)
  h = bxor(h, rshift(h, 13))
  h = mul32(h, 0xc2b2ae35)
  h = bxor(h, rshift(h, 16))
  if h < 0 then h = h + 4294967296 end
  return h
end

-- floor(h × total / 2^32), exact for any h < 2^32 and total < 2^32 (the product itself would
-- need 64 bits): h = hi·2^16 + lo, and every partial value stays below 2^49.
local function position(h, total)
  local hi, lo = floor(h / 65536), h % 65536
  return floor((hi * total + floor(lo * total / 65536)) / 65536)
end

local function bucket(key)
  local pos = position(murmur3_32(CONFIG.salt .. key, 0), TOTAL)
  for i, c in ipairs(CUMULATIVE) do
    if c > pos then return CONFIG.versions[i].name end
  end
  return CONFIG.default_version
end

local function trim(s)
  return match(s, "^[ \t]*(.-)[ \t]*$")
end

-- The first cookie called `name` in a Cookie header: pairs split on `;`, pairs without `=`
-- skipped, names and values trimmed, one pair of double quotes removed.
local function cookie_value(header, name)
  local start = 1
  local len = #header
  while start <= len + 1 do
    local stop = find(header, ";", start, true) or (len + 1)
    local eq = find(header, "=", start, true)
    if eq and eq < stop and trim(sub(header, start, eq - 1)) == name then
      local v = trim(sub(header, eq + 1, stop - 1))
      if #v >= 2 and byte(v, 1) == 34 and byte(v, #v) == 34 then v = sub(v, 2, -2) end
      return v
    end
    start = stop + 1
  end
  return nil
end

local function decide(headers)
  local cookies = headers:get("cookie")
  if cookies then
    local v = cookie_value(cookies, CONFIG.cookie)
    if v and v ~= "" then return bucket(v) end
  end
  local h = headers:get(CONFIG.header)
  if h then
    h = trim(h)
    if h ~= "" then return bucket(h) end
  end
  return CONFIG.default_version
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local version = decide(headers)
  headers:replace(CONFIG.route_header, version)
  -- The router must match on the choice, not on the header as it arrived.
  request_handle:clearRouteCache()
  request_handle:streamInfo():dynamicMetadata():set("sticky_canary", "version", version)
end

function envoy_on_response(response_handle)
  local meta = response_handle:streamInfo():dynamicMetadata():get("sticky_canary")
  if meta then
    response_handle:headers():replace(CONFIG.response_header, meta["version"])
  end
end
