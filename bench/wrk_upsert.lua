-- wrk script for bench/hub.py (--upsert-client wrk): POST each pre-generated batch body exactly once.
-- Usage: wrk -tT -cC -d1h -s bench/wrk_upsert.lua http://127.0.0.1:PORT -- BODY_DIR BATCHES T
-- Thread k sends bodies k, k+T, k+2T … ($BODY_DIR/%06d.json). A thread writes $BODY_DIR/started-k when it
-- sends its first batch and $BODY_DIR/done-k (with its counts) after its last answer, then stops; hub.py
-- times the phase from those files and ends wrk. Once a thread has sent all its bodies, its idle
-- connections ask for /health until the last answers arrive (those are not counted).

local bodies = {}
local sent, answered, not_ok, dir = 0, 0, 0, nil
local thread_count = 0
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

local function touch(name, text)
   local f = assert(io.open(dir .. "/" .. name, "w"))
   f:write(text or "")
   f:close()
end

function init(args)
   dir = args[1]
   local batches, threads = tonumber(args[2]), tonumber(args[3])
   for i = tid, batches - 1, threads do
      local f = assert(io.open(string.format("%s/%06d.json", dir, i), "rb"))
      bodies[#bodies + 1] = f:read("*a")
      f:close()
   end
end

function request()
   if sent < #bodies then
      sent = sent + 1
      if sent == 1 then touch("started-" .. tid) end
      return wrk.format("POST", "/api/v1/entityOperations/upsert", headers, bodies[sent])
   end
   return wrk.format("GET", "/health")
end

function response(status, hdrs, body)
   if body ~= nil and string.find(body, '"success"', 1, true) then
      answered = answered + 1
      if status ~= 200 then not_ok = not_ok + 1 end
      if answered == #bodies then
         touch("done-" .. tid, string.format('{"answered":%d,"not_ok":%d}', answered, not_ok))
         wrk.thread:stop()
      end
   end
end
