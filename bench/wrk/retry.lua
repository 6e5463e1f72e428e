-- POST a retry of a fresh failed task each time: ids come one per line from IDS_FILE.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local next_id = 0
local headers = { ["Content-Type"] = "application/json" }

request = function()
  next_id = next_id + 1
  local id = ids[next_id] or "exhausted"
  return wrk.format("POST", "/api/jobs?action=retry", headers, '{"taskId":"' .. id .. '","userId":"bench"}')
end
