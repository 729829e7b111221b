"""A light tenant's publish latency while a heavy tenant publishes large events through 100 costly filters.

Usage: python3 bench/drills/filter_isolation.py <switchyard binary> [seconds=15] [items=40000]

Starts the binary on a free port with a fresh data directory, creates two tenants, gives the heavy one an endpoint
with 100 filters `$[?count(@.data..*) == N]` (each counts every node of the payload; none matches) and the light
one an endpoint for everything, then for `seconds` publishes the heavy tenant's `{"items": [{"n": i}, ...]}`
events from two clients while the light tenant publishes small events one at a time. Prints the light tenant's
latency and the heavy tenant's answers. Standard library only; BENCHMARKS.md (twenty-fifth round) has results.
"""
import atexit, json, os, shutil, subprocess, sys, tempfile, threading, time, urllib.request, urllib.error, socket, statistics

binary, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 15
items = int(sys.argv[3]) if len(sys.argv) > 3 else 40000
ADMIN = "drill-admin-key-0123456789"
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
data_dir = tempfile.mkdtemp()
env = dict(os.environ, SWITCHYARD_LISTEN=f"127.0.0.1:{port}", SWITCHYARD_DATA_DIR=data_dir,
           SWITCHYARD_ADMIN_KEY=ADMIN, SWITCHYARD_DEV="true", SWITCHYARD_LOG="warn")
proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def shutdown():
    proc.terminate()
    proc.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


atexit.register(shutdown)

base = f"http://127.0.0.1:{port}"

def call(method, path, body=None, tenant=None, timeout=120):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", f"Bearer {ADMIN}")
    req.add_header("Content-Type", "application/json")
    if tenant: req.add_header("Switchyard-Tenant", tenant)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read() or b"null")

for _ in range(100):
    try:
        if call("GET", "/healthz")[0] == 200: break
    except Exception: pass
    time.sleep(0.1)
heavy = call("POST", "/api/v1/tenants", {"name": "Heavy"})[1]["id"]
light = call("POST", "/api/v1/tenants", {"name": "Light"})[1]["id"]
subs = [{"event_type": "a.b", "filter": f"$[?count(@.data..*) == {1000 + i}]"} for i in range(100)]
st, body = call("POST", "/api/v1/endpoints", {"url": "http://127.0.0.1:9/", "subscriptions": subs}, heavy)
assert st == 201, body
st, body = call("POST", "/api/v1/endpoints", {"url": "http://127.0.0.1:9/"}, light)
assert st == 201, body
large = {"type": "a.b", "data": {"items": [{"n": i} for i in range(items)]}}
print(f"large payload: {len(json.dumps(large['data']))} bytes")
stop = time.time() + seconds
heavy_results, light_lat = [], []
def flood():
    while time.time() < stop:
        t = time.time(); st, _ = call("POST", "/api/v1/events", large, heavy, timeout=600)
        heavy_results.append((st, time.time() - t))
def probe():
    while time.time() < stop:
        t = time.time(); st, _ = call("POST", "/api/v1/events", {"type": "a.b", "data": {"x": 1}}, light, timeout=600)
        light_lat.append(time.time() - t)
        assert st == 202, st
        time.sleep(0.01)
threads = [threading.Thread(target=flood) for _ in range(2)] + [threading.Thread(target=probe)]
for t in threads: t.start()
for t in threads: t.join()
shutdown()
lat = sorted(light_lat)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
codes = {}
for st, _ in heavy_results: codes[st] = codes.get(st, 0) + 1
print(f"light publishes: {len(lat)}  p50 {q(0.5):.1f} ms  p99 {q(0.99):.1f} ms  max {lat[-1]*1000:.1f} ms")
print(f"heavy publishes: {codes}  median {statistics.median(d for _, d in heavy_results):.2f} s")
