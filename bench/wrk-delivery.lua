-- wrk script for bench/intake.sh: signed Shopify webhook deliveries, each
-- with its own X-Shopify-Webhook-Id and X-Shopify-Event-Id (a new event,
-- as Shopify sends for every new order).
--
--   wrk ... -s bench/wrk-delivery.lua URL -- BODY_FILE HMAC ID_PREFIX [LIMIT]
--
-- The body never changes, so its signature is computed once by the caller
-- (intake.py) and passed in; only the two ids vary.  Everything else is
-- built once per thread in init(), so a request costs one string
-- concatenation.  LIMIT > 0 stops each thread after LIMIT / threads
-- requests (wrk itself only knows durations).  done() prints one line
-- "WRKJSON {...}" that intake.py parses.

local nthreads = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("thread_no", nthreads)
end

local head, mid, tail, prefix
local issued = 0
local quota = 0

function init(args)
    local f = assert(io.open(args[1], "rb"))
    local body = f:read("*a")
    f:close()

    local hmac = args[2]
    local limit = tonumber(args[4] or "0") or 0

    -- a thread does not know how many threads there are: intake.py
    -- passes the count through the environment
    local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1") or 1

    if limit > 0 then
        quota = math.ceil(limit / threads)
    end

    prefix = args[3] .. "-t" .. tostring(thread_no) .. "-"

    local host = wrk.host
    if wrk.port then
        host = host .. ":" .. wrk.port
    end

    head = "POST " .. wrk.path .. " HTTP/1.1\r\n"
        .. "Host: " .. host .. "\r\n"
        .. "Content-Type: application/json\r\n"
        .. "X-Shopify-Topic: orders/create\r\n"
        .. "X-Shopify-Hmac-Sha256: " .. hmac .. "\r\n"
        .. "X-Shopify-Shop-Domain: acme-demo.myshopify.com\r\n"
        .. "X-Shopify-API-Version: 2024-04\r\n"
        .. "X-Shopify-Triggered-At: 2026-03-16T14:12:33.000261327Z\r\n"
        .. "X-Shopify-Webhook-Id: "
    mid = "\r\nX-Shopify-Event-Id: ev-"
    tail = "\r\nContent-Length: " .. tostring(#body) .. "\r\n\r\n" .. body

    -- no response() callback: wrk then skips parsing headers and bodies
    response = nil
end

function request()
    issued = issued + 1

    if quota > 0 and issued >= quota then
        -- this is the last one; the thread's loop ends after it is sent
        wrk.thread:stop()
    end

    local id = prefix .. tostring(issued)
    return head .. id .. mid .. id .. tail
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
        .. "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,"
        .. "\"err_status\":%d,\"err_timeout\":%d,"
        .. "\"lat_p50_us\":%d,\"lat_p90_us\":%d,\"lat_p99_us\":%d,"
        .. "\"lat_p999_us\":%d,\"lat_max_us\":%d,\"lat_mean_us\":%.1f}\n",
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50.0), latency:percentile(90.0),
        latency:percentile(99.0), latency:percentile(99.9),
        latency.max, latency.mean))
end
