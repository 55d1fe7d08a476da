#!/usr/bin/env python3
"""Issue 12's scale measurement: N mostly idle POP3 accounts on two `mailferry run` instances
sharing one PostgreSQL (state: postgres), one Dovecot, one smtp-sink, all on loopback.

Run as root (Dovecot needs it; it drops to its own users). PostgreSQL, smtp-sink and mailferry run
as the unprivileged user mailferry-test. Everything lives under /tmp/scale/run (recreated), and
everything started is stopped at the end (also on Ctrl-C / an exception).

    cargo build --release && python3 scripts/measure-scale.py [--accounts 2000] [--interval 60] [--warmup 150]
                                  [--window 300] [--trickle-window 120] [--trickle-per-min 20]
                                  [--auth scram|plain]

Phases: set up and start the servers; start both instances (every account is due at once: the
first round, which also creates each account's rows); wait until every account has had a pass
and --warmup seconds have passed; then the steady *idle* window (--window s, no new mail): CPU
(/proc utime+stime of each mailferry, and of the whole PostgreSQL and Dovecot process trees),
pg_stat_statements (role mailferry only), pg_stat_database transactions, and the passes and the
pass-duration histogram from each instance's /metrics; then optionally a *trickle* window in
which --trickle-per-min random mailboxes get one message a minute (1 % of polls with mail at 2,000
accounts / 60 s). Results: /tmp/scale/run/results.json and a printed summary.
"""

import argparse
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import time

# Built by `cargo build --release` in this checkout.
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "mailferry")
BASE = "/tmp/scale/run"
MAIL_USER = "mailferry-test"
# Outside the kernel's ephemeral range (32768-60999): no outgoing connection can hold them.
PG_PORT, POP3_PORT, SMTP_PORT = 61432, 61110, 61025
METRICS = [61431, 61433]
PG_PASS = "scale-Secret-12"
USER_PASS = "Scale-Pop-12"
TICK = os.sysconf("SC_CLK_TCK")

pw = pwd.getpwnam(MAIL_USER)
UID, GID = pw.pw_uid, pw.pw_gid
started = []  # (kind, Popen or pid) to stop at the end


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def chown_r(path):
    for root, dirs, files in os.walk(path):
        os.chown(root, UID, GID)
        for f in files:
            os.chown(os.path.join(root, f), UID, GID)


def pg_bin():
    vs = sorted(int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit()
                and os.path.exists(f"/usr/lib/postgresql/{v}/bin/postgres"))
    return f"/usr/lib/postgresql/{vs[-1]}/bin"


def as_mail_user(**kw):
    return dict(user=UID, group=GID, extra_groups=[], **kw)


def psql(sql, db="mailferry"):
    out = subprocess.run(
        [f"{pg_bin()}/psql", "-h", f"{BASE}/pg", "-p", str(PG_PORT), "-U", "postgres", "-d", db,
         "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, **as_mail_user())
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {out.stderr}")
    return out.stdout.strip()


# ---------------------------------------------------------------- set-up

def message(i, k):
    return (f"From: s@remote.test\nTo: r{i:04d}@corp.local\nSubject: m{i}-{k}\n"
            f"Message-ID: <m{i}-{k}.{time.time_ns()}@remote.test>\nDate: Mon, 7 Dec 2026 20:00:00 +0000\n"
            f"\nhello {i} {k}\n").encode()


_seq = [0]


def deliver(i, k):
    md = f"{BASE}/dovecot/home/u{i:04d}/Maildir"
    _seq[0] += 1
    name = f"{int(time.time())}.M{_seq[0]}P{os.getpid()}.scale"
    tmp = f"{md}/tmp/{name}"
    with open(tmp, "wb") as f:
        f.write(message(i, k))
    os.chmod(tmp, 0o600)
    os.chown(tmp, UID, GID)
    os.rename(tmp, f"{md}/new/{name}")


def setup(args):
    for port in [PG_PORT, POP3_PORT, SMTP_PORT] + METRICS:
        busy = [l for l in subprocess.run(["ss", "-tan"], capture_output=True, text=True)
                .stdout.splitlines() if f"127.0.0.1:{port} " in l and not l.startswith("TIME-WAIT")]
        if busy:
            sys.exit(f"port {port} is in use")
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    os.chmod(BASE, 0o755)
    n = args.accounts

    # Dovecot: n POP3 users, passwd-file with {PLAIN} passwords, Maildirs, no TLS (loopback).
    d = f"{BASE}/dovecot"
    for sub in ["", "run", "state", "home"]:
        os.makedirs(f"{d}/{sub}", exist_ok=True)
        os.chmod(f"{d}/{sub}", 0o755)
    lines = []
    for i in range(n):
        home = f"{d}/home/u{i:04d}"
        for sub in ["cur", "new", "tmp"]:
            os.makedirs(f"{home}/Maildir/{sub}")
        lines.append(f"u{i:04d}@example.com:{{PLAIN}}{USER_PASS}:{UID}:{GID}::{home}::")
    chown_r(f"{d}/home")
    with open(f"{d}/passwd", "w") as f:
        f.write("\n".join(lines) + "\n")
    mechs = "plain login cram-md5 scram-sha-1 scram-sha-256 apop" if args.auth == "scram" \
        else "plain login"
    with open(f"{d}/dovecot.conf", "w") as f:
        f.write(f"""instance_name = scale-dovecot
protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S.%{{usecs}} "
login_greeting = scale-dovecot ready
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {UID}
first_valid_gid = 1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechs}
mail_location = maildir:~/Maildir
pop3_uidl_format = %g
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {POP3_PORT}
  }}
}}
""")
    # 1 % of the mailboxes with one message.
    for i in range(0, n, 100):
        deliver(i, 0)

    # Accounts: one file each in a shared accounts_dir.
    acc = f"{BASE}/accounts.d"
    os.makedirs(acc)
    for i in range(n):
        with open(f"{acc}/a{i:04d}.yaml", "w") as f:
            f.write(f"name: a{i:04d}\nprotocol: pop3\nhost: 127.0.0.1\nport: {POP3_PORT}\n"
                    f"tls: none\nusername: u{i:04d}@example.com\npassword: {USER_PASS}\n"
                    f"poll_interval: {args.interval}s\n")
        os.chmod(f"{acc}/a{i:04d}.yaml", 0o600)
    chown_r(acc)
    os.chmod(acc, 0o700)

    # Two instances: same configuration but state_dir and metrics port.
    url = f"postgres://mailferry:{PG_PASS}@127.0.0.1:{PG_PORT}/mailferry"
    for k in range(2):
        inst = f"{BASE}/inst{k}"
        os.makedirs(f"{inst}/state")
        cfg = f"{inst}/mailferry.yaml"
        with open(cfg, "w") as f:
            f.write(f"""state_dir: {inst}/state
metrics:
  listen: 127.0.0.1:{METRICS[k]}
relay:
  host: 127.0.0.1
  port: {SMTP_PORT}
  tls: none
domains: [corp.local]
postmaster: postmaster@corp.local
state: {{postgres: {{url: "{url}"}}}}
accounts_dir: {acc}
""")
        os.chmod(cfg, 0o600)
        chown_r(inst)
        os.chmod(f"{inst}/state", 0o700)

    # smtp-sink's directory.
    os.makedirs(f"{BASE}/sink")
    os.chown(f"{BASE}/sink", UID, GID)
    os.makedirs(f"{BASE}/pg")
    os.chown(f"{BASE}/pg", UID, GID)
    os.chmod(f"{BASE}/pg", 0o700)


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if f"127.0.0.1:{port} " in subprocess.run(["ss", "-ltn"], capture_output=True,
                                                   text=True).stdout:
            return True
        time.sleep(0.3)
    return False


def start_servers(args):
    b = pg_bin()
    pgd = f"{BASE}/pg"
    with open(f"{pgd}/su.pw", "w") as f:
        f.write("unused-superuser-password\n")
    os.chown(f"{pgd}/su.pw", UID, GID)
    subprocess.run([f"{b}/initdb", "-D", f"{pgd}/data", "-U", "postgres", "-A", "scram-sha-256",
                    "--auth-local=trust", f"--pwfile={pgd}/su.pw", "--locale=C", "-E", "UTF8"],
                   check=True, capture_output=True, cwd=pgd, env={"LC_ALL": "C", "HOME": pgd},
                   **as_mail_user())
    pglog = open(f"{pgd}/postgres.log", "w")
    os.chown(f"{pgd}/postgres.log", UID, GID)
    # Durable defaults (fsync, synchronous_commit on), unlike the test harness.
    p = subprocess.Popen([f"{b}/postgres", "-D", f"{pgd}/data", "-k", pgd, "-p", str(PG_PORT),
                          "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60",
                          "-c", "shared_preload_libraries=pg_stat_statements",
                          "-c", "pg_stat_statements.track=all",
                          "-c", "pg_stat_statements.max=5000",
                          "-c", f"synchronous_commit={args.sync_commit}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=pglog,
                         cwd=pgd, env={"LC_ALL": "C", "HOME": pgd}, **as_mail_user())
    started.append(("postgres", p))
    assert wait_port(PG_PORT), "postgres did not start"
    time.sleep(1)
    psql(f"CREATE ROLE mailferry LOGIN PASSWORD '{PG_PASS}'", db="postgres")
    psql("CREATE DATABASE mailferry OWNER mailferry", db="postgres")
    psql("CREATE EXTENSION pg_stat_statements")

    subprocess.run(["dovecot", "-c", f"{BASE}/dovecot/dovecot.conf"], check=True)
    assert wait_port(POP3_PORT), "dovecot did not start"
    started.append(("dovecot", int(open(f"{BASE}/dovecot/run/master.pid").read())))

    sink_err = open(f"{BASE}/sink/stderr", "w")
    s = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", MAIL_USER, "-h", "scale-sink", "-D",
                          f"{BASE}/sink/dump", f"127.0.0.1:{SMTP_PORT}", "512"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink_err)
    started.append(("smtp-sink", s))
    assert wait_port(SMTP_PORT), "smtp-sink did not start"


def start_instances():
    procs = []
    for k in range(2):
        inst = f"{BASE}/inst{k}"
        out = open(f"{inst}/log", "w")
        os.chown(f"{inst}/log", UID, GID)
        p = subprocess.Popen([BIN, "run", "--config", f"{inst}/mailferry.yaml"],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=inst,
                             env={"HOME": inst, "PATH": "/usr/bin:/bin"}, **as_mail_user())
        started.append((f"mailferry{k}", p))
        procs.append(p)
    return procs


def stop_all():
    for kind, p in reversed(started):
        pid = p if isinstance(p, int) else p.pid
        try:
            os.kill(pid, signal.SIGINT if kind == "postgres" else signal.SIGTERM)
        except ProcessLookupError:
            continue
        if isinstance(p, subprocess.Popen):
            try:
                p.wait(timeout=70)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        else:
            for _ in range(50):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        log("stopped", kind, pid)
    started.clear()


# ---------------------------------------------------------------- measuring

def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17, ppid=4.
    return int(rest[1]), [int(x) for x in rest[11:15]]


def cpu_self(pid):
    """utime+stime of one process (all its threads), seconds."""
    _, (u, s, _, _) = stat_fields(pid)
    return (u + s) / TICK


def cpu_tree(root):
    """CPU seconds of `root` and its descendants, live and reaped (cutime/cstime)."""
    children = {}
    info = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid, t = stat_fields(int(d))
        except (FileNotFoundError, ProcessLookupError):
            continue
        info[int(d)] = t
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        if p in info:
            total += sum(info[p])
        todo.extend(children.get(p, []))
    return total / TICK


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def machine_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) / TICK, (v[3] + v[4]) / TICK  # total, idle+iowait


LINE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def scrape(port):
    out = subprocess.run(["curl", "-s", "--max-time", "30", f"http://127.0.0.1:{port}/metrics"],
                         capture_output=True, text=True).stdout
    passes, hsum, hcount, buckets = {}, 0.0, 0, {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if name == "mailferry_passes_total":
            acct = re.search(r'account="([^"]+)"', labels).group(1)
            passes[acct] = passes.get(acct, 0) + value
        elif name == "mailferry_pass_duration_seconds_bucket":
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets[le] = buckets.get(le, 0) + value
        elif name == "mailferry_pass_duration_seconds_sum":
            hsum += value
        elif name == "mailferry_pass_duration_seconds_count":
            hcount += value
    return {"passes": passes, "sum": hsum, "count": hcount, "buckets": buckets,
            "bytes": len(out)}


PGSS = """SELECT s.queryid, s.calls, s.total_exec_time, s.rows, regexp_replace(s.query, '\\s+', ' ', 'g')
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE r.rolname = 'mailferry' ORDER BY s.calls DESC"""


def pg_snapshot():
    stmts = []
    for line in psql(PGSS).splitlines():
        qid, calls, ms, rows, q = line.split("\t", 4)
        stmts.append({"calls": int(calls), "ms": float(ms), "rows": int(rows), "query": q})
    db = psql("SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
              "tup_updated, tup_deleted, blks_read, blks_hit FROM pg_stat_database "
              "WHERE datname = 'mailferry'", db="postgres").split("\t")
    wal = psql("SELECT wal_records, wal_bytes, wal_fpi FROM pg_stat_wal", db="postgres").split("\t")
    tables = {}
    for line in psql("SELECT relname, n_tup_upd, n_tup_hot_upd, n_dead_tup, n_live_tup, "
                     "autovacuum_count + vacuum_count, pg_total_relation_size(relid) "
                     "FROM pg_stat_user_tables").splitlines():
        name, *v = line.split("\t")
        tables[name] = dict(zip(["upd", "hot_upd", "dead", "live", "vacuums", "bytes"],
                                map(int, v)))
    return {"stmts": stmts, "xact_commit": int(db[0]), "xact_rollback": int(db[1]),
            "tup": dict(zip(["returned", "fetched", "inserted", "updated", "deleted",
                             "blks_read", "blks_hit"], map(int, db[2:]))),
            "wal_records": int(wal[0]), "wal_bytes": int(float(wal[1])), "wal_fpi": int(wal[2]),
            "tables": tables}


def cpu_snapshot(procs, pg_pid, dove_pid):
    total, idle = machine_cpu()
    return {"t": time.time(), "mf": [cpu_self(p.pid) for p in procs], "pg": cpu_tree(pg_pid),
            "dovecot": cpu_tree(dove_pid), "machine": total, "machine_idle": idle}


def dovecot_sessions(t1, t2):
    """POP3 sessions (login .. logout) whose login fell within [t1, t2), from Dovecot's log."""
    logins, outs = {}, {}
    ts = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{6}) ')
    with open(f"{BASE}/dovecot/dovecot.log", errors="replace") as f:
        for line in f:
            m = ts.match(line)
            if not m:
                continue
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1e6
            sess = re.search(r'session=<([^>]+)>', line)
            if "pop3-login: Info: Login:" in line and sess:
                logins[sess.group(1)] = t
            elif "Disconnected" in line and "pop3(" in line:
                sid = re.search(r'pop3\([^)]*\)<\d+><([^>]+)>', line)
                if sid:
                    outs[sid.group(1)] = t
    d = sorted(outs[s] - t0 for s, t0 in logins.items() if t1 <= t0 < t2 and s in outs)
    return d


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def window(label, seconds, procs, pg_pid, dove_pid, trickle_per_min=0, n=0):
    log(f"window {label}: {seconds}s" + (f", {trickle_per_min} messages/min" if trickle_per_min else ""))
    m1 = [scrape(p) for p in METRICS]
    psql("SELECT pg_stat_statements_reset()")
    p1 = pg_snapshot()
    c1 = cpu_snapshot(procs, pg_pid, dove_pid)
    rss, active = [[], []], []
    delivered = 0
    end = c1["t"] + seconds
    next_drop = c1["t"]
    while time.time() < end:
        if trickle_per_min and time.time() >= next_drop:
            for i in random.sample(range(n), trickle_per_min):
                deliver(i, int(time.time()))
            delivered += trickle_per_min
            next_drop += 60
        for k, p in enumerate(procs):
            rss[k].append(proc_status(p.pid, "VmRSS"))
        active.append(int(psql("SELECT count(*) FROM pg_stat_activity WHERE datname='mailferry' "
                               "AND usename='mailferry' AND state <> 'idle'", db="postgres")))
        time.sleep(min(5, max(0, end - time.time())))
    c2 = cpu_snapshot(procs, pg_pid, dove_pid)
    p2 = pg_snapshot()
    m2 = [scrape(p) for p in METRICS]
    dt = c2["t"] - c1["t"]

    per_inst = [sum(m2[k]["passes"].values()) - sum(m1[k]["passes"].values()) for k in range(2)]
    passes = sum(per_inst)
    accounts_polled = [sum(1 for a, v in m2[k]["passes"].items() if v > m1[k]["passes"].get(a, 0))
                       for k in range(2)]
    both = len({a for k in range(2) for a, v in m2[k]["passes"].items()
                if v > m1[k]["passes"].get(a, 0)})
    hsum = sum(m2[k]["sum"] - m1[k]["sum"] for k in range(2))
    hcount = sum(m2[k]["count"] - m1[k]["count"] for k in range(2))
    buckets = {}
    for k in range(2):
        for le, v in m2[k]["buckets"].items():
            buckets[le] = buckets.get(le, 0) + v - m1[k]["buckets"].get(le, 0)
    calls = sum(s["calls"] for s in p2["stmts"])
    exec_ms = sum(s["ms"] for s in p2["stmts"])
    xacts = p2["xact_commit"] - p1["xact_commit"]
    mf_cpu = [c2["mf"][k] - c1["mf"][k] for k in range(2)]
    pg_cpu = c2["pg"] - c1["pg"]
    dv_cpu = c2["dovecot"] - c1["dovecot"]
    mach = c2["machine"] - c1["machine"]
    mach_busy = mach - (c2["machine_idle"] - c1["machine_idle"])
    sess = dovecot_sessions(c1["t"], c2["t"])
    r = {
        "label": label, "seconds": dt, "messages_dropped": delivered,
        "passes": passes, "passes_per_instance": per_inst, "passes_per_s": passes / dt,
        "accounts_polled_per_instance": accounts_polled, "accounts_polled_total": both,
        "pass_mean_s": hsum / hcount if hcount else None, "pass_count_hist": hcount,
        "pass_buckets_cum": dict(sorted(((float(k) if k != "+Inf" else 1e9), v / hcount if hcount else 0)
                                        for k, v in buckets.items())),
        "dovecot_session_s": {"n": len(sess), "p50": pct(sess, .5), "p90": pct(sess, .9),
                              "p99": pct(sess, .99), "max": sess[-1] if sess else None,
                              "mean": sum(sess) / len(sess) if sess else None},
        "db_statements": calls, "db_statements_per_pass": calls / passes,
        "db_statements_per_s": calls / dt,
        "db_exec_ms_per_pass": exec_ms / passes,
        "db_xact_commit": xacts, "db_xacts_per_pass": xacts / passes,
        "db_xact_rollback": p2["xact_rollback"] - p1["xact_rollback"],
        "wal_bytes_per_pass": (p2["wal_bytes"] - p1["wal_bytes"]) / passes,
        "wal_records_per_pass": (p2["wal_records"] - p1["wal_records"]) / passes,
        "tuples": {k: p2["tup"][k] - p1["tup"][k] for k in p1["tup"]},
        "wal_fpi": p2["wal_fpi"] - p1["wal_fpi"],
        "tables_end": p2["tables"],
        "table_updates_per_pass": {t: {"upd": (v["upd"] - p1["tables"].get(t, {}).get("upd", 0)) / passes,
                                       "hot": (v["hot_upd"] - p1["tables"].get(t, {}).get("hot_upd", 0)) / passes}
                                   for t, v in p2["tables"].items()},
        "statements": [{"calls": s["calls"], "rows": s["rows"],
                        "per_pass": round(s["calls"] / passes, 3),
                        "mean_ms": round(s["ms"] / s["calls"], 4) if s["calls"] else 0,
                        "query": s["query"][:160]} for s in p2["stmts"]],
        "cpu_s": {"mailferry": mf_cpu, "postgres": pg_cpu, "dovecot": dv_cpu,
                  "machine_busy": mach_busy, "machine_total": mach},
        "cpu_ms_per_pass": {"mailferry_both": 1000 * sum(mf_cpu) / passes,
                            "mailferry_per_instance": [1000 * mf_cpu[k] / per_inst[k]
                                                       if per_inst[k] else None for k in range(2)],
                            "postgres": 1000 * pg_cpu / passes, "dovecot": 1000 * dv_cpu / passes,
                            "machine_busy": 1000 * mach_busy / passes},
        "cores_used": {"mailferry": [c / dt for c in mf_cpu], "postgres": pg_cpu / dt,
                       "dovecot": dv_cpu / dt, "machine_busy": mach_busy / dt},
        "rss_kib_max_in_window": [max(x) for x in rss],
        "pg_nonidle_backends": {"mean": sum(active) / len(active), "max": max(active)},
        "metrics_page_bytes": [m["bytes"] for m in m2],
    }
    return r


def summary(r):
    print(f"\n=== {r['label']}: {r['seconds']:.0f} s ===")
    print(f"passes {r['passes']:.0f} ({r['passes_per_s']:.2f}/s), per instance "
          f"{r['passes_per_instance']}, accounts polled {r['accounts_polled_per_instance']} "
          f"(distinct {r['accounts_polled_total']})")
    b = r["pass_buckets_cum"]
    print(f"pass duration mean {1000 * r['pass_mean_s']:.1f} ms; cum share "
          + ", ".join(f"<={k:g}s {v:.3f}" for k, v in list(b.items())[:6]))
    ds = r["dovecot_session_s"]
    if ds["n"]:
        print(f"dovecot login->logout n={ds['n']} p50 {1000 * ds['p50']:.1f} ms p90 "
              f"{1000 * ds['p90']:.1f} p99 {1000 * ds['p99']:.1f} max {1000 * ds['max']:.1f} "
              f"mean {1000 * ds['mean']:.1f}")
    print(f"DB: {r['db_statements_per_pass']:.2f} statements/pass ({r['db_statements_per_s']:.1f}/s), "
          f"{r['db_xacts_per_pass']:.2f} commits/pass, exec {r['db_exec_ms_per_pass']:.3f} ms/pass, "
          f"WAL {r['wal_bytes_per_pass']:.0f} B/pass, non-idle backends mean "
          f"{r['pg_nonidle_backends']['mean']:.2f} max {r['pg_nonidle_backends']['max']}")
    for s in r["statements"]:
        print(f"  {s['per_pass']:7.3f}/pass rows {s['rows']:7d} {s['mean_ms']:8.4f} ms  {s['query'][:100]}")
    print(f"  table updates/pass {json.dumps({t: {k: round(x, 2) for k, x in v.items()} for t, v in r['table_updates_per_pass'].items() if v['upd']})}"
          f", WAL FPI in window {r['wal_fpi']}")
    c = r["cpu_ms_per_pass"]
    print(f"CPU ms/pass: mailferry (both) {c['mailferry_both']:.2f}, per instance "
          f"{[round(x, 2) for x in c['mailferry_per_instance']]}, postgres {c['postgres']:.2f}, "
          f"dovecot {c['dovecot']:.2f}, whole machine {c['machine_busy']:.2f}")
    print(f"cores: {json.dumps({k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v]) for k, v in r['cores_used'].items()})}")
    print(f"RSS max in window KiB {r['rss_kib_max_in_window']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--trickle-window", type=int, default=120)
    ap.add_argument("--trickle-per-min", type=int, default=20)
    ap.add_argument("--auth", choices=["scram", "plain"], default="scram",
                    help="what Dovecot offers: scram (the harness's list: mailferry picks "
                         "SCRAM-SHA-256) or plain (PLAIN and LOGIN only)")
    ap.add_argument("--sync-commit", choices=["on", "off"], default="on",
                    help="PostgreSQL's synchronous_commit (on: every commit waits for its fsync)")
    args = ap.parse_args()
    results = {"args": vars(args), "binary_version": subprocess.run(
        [BIN, "--version"], capture_output=True, text=True).stdout.strip()}
    try:
        log("setting up", args.accounts, "accounts")
        setup(args)
        start_servers(args)
        pg_pid = int(open(f"{BASE}/pg/data/postmaster.pid").readline())
        dove_pid = int(open(f"{BASE}/dovecot/run/master.pid").read())
        log("servers up: postgres", pg_pid, "dovecot", dove_pid)
        t0 = time.time()
        procs = start_instances()
        log("instances", [p.pid for p in procs])
        # The first round: until every account had a pass, and the warm-up passed.
        first_round = None
        while True:
            time.sleep(10)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"instance {p.pid} exited: see {BASE}/inst*/log")
            ms = [scrape(p) for p in METRICS]
            polled = {a for m in ms for a, v in m["passes"].items() if v > 0}
            total = sum(sum(m["passes"].values()) for m in ms)
            log(f"t+{time.time() - t0:.0f}s: {len(polled)} accounts polled, {total:.0f} passes")
            if len(polled) >= args.accounts and first_round is None:
                first_round = time.time() - t0
                results["first_round_s"] = first_round
            if first_round is not None and time.time() - t0 >= args.warmup:
                break
        results["startup_cpu_s"] = [cpu_self(p.pid) for p in procs]
        results["idle"] = window("idle", args.window, procs, pg_pid, dove_pid)
        summary(results["idle"])
        if args.trickle_window:
            results["trickle"] = window("trickle", args.trickle_window, procs, pg_pid, dove_pid,
                                        args.trickle_per_min, args.accounts)
            summary(results["trickle"])
        results["peak_rss_kib"] = [proc_status(p.pid, "VmHWM") for p in procs]
        results["threads"] = [proc_status(p.pid, "Threads") for p in procs]
        st = subprocess.run([BIN, "status", "--config", f"{BASE}/inst0/mailferry.yaml", "--json"],
                            capture_output=True, text=True, cwd=f"{BASE}/inst0",
                            env={"HOME": f"{BASE}/inst0"}, **as_mail_user())
        with open(f"{BASE}/status.json", "w") as f:
            f.write(st.stdout)
        results["status_rc"] = st.returncode
        results["status_head"] = st.stdout[:600] + st.stderr[:600]
        results["sink_transactions"] = open(f"{BASE}/sink/dump", errors="replace").read() \
            .count("X-Mail-Args:") if os.path.exists(f"{BASE}/sink/dump") else 0
        results["leases"] = psql("SELECT count(*), count(*) FILTER (WHERE failures > 0), "
                                 "min(last_pass_at), max(last_pass_at) FROM leases")
        results["warnings"] = [l for k in range(2) for l in open(f"{BASE}/inst{k}/log",
                                                                   errors="replace")
                               if " WARN " in l or " ERROR " in l][:20]
        print(f"\npeak RSS KiB {results['peak_rss_kib']}, threads {results['threads']}, "
              f"first round {results.get('first_round_s')} s, sink transactions "
              f"{results['sink_transactions']}, leases {results['leases']}")
    finally:
        stop_all()
        with open(f"{BASE}/results.json", "w") as f:
            json.dump(results, f, indent=1, default=str)
        log("results in", f"{BASE}/results.json")


if __name__ == "__main__":
    main()
