-- wrk script: POST CDS Hooks requests, each with its own pre-signed ES384 JWT (unique jti).
-- Environment: WR_BODIES (file: one "path<TAB>json body" per line), WR_TOKENS (file: one
-- "path<TAB>jwt" per line), WR_THREADS (wrk -t). Every token is used once: replay
-- protection is exercised, not bypassed.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    local key, value = line:match("^([^\t]+)\t(.*)$")
    if key then table.insert(out, {key, value}) end
  end
  return out
end

function init(args)
  local nthreads = tonumber(os.getenv("WR_THREADS") or "1")
  bodies = lines(os.getenv("WR_BODIES"))
  tokens = {}
  local i = 0
  for _, pair in ipairs(lines(os.getenv("WR_TOKENS"))) do
    -- each wrk thread takes a disjoint share of the tokens
    if i % nthreads == id then
      tokens[pair[1]] = tokens[pair[1]] or {}
      table.insert(tokens[pair[1]], pair[2])
    end
    i = i + 1
  end
  used = {}
  next_body = id % #bodies
  exhausted = 0
end

function request()
  next_body = next_body % #bodies + 1
  local path, body = bodies[next_body][1], bodies[next_body][2]
  local list = tokens[path] or {}
  local n = (used[path] or 0) + 1
  used[path] = n
  local token = list[n]
  if token == nil then
    exhausted = exhausted + 1
    token = "exhausted"
  end
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("WR_RESULT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
  out:close()
end
