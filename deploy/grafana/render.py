#!/usr/bin/env python3
"""Draws the main panels of mailferry-dashboard.json from a real run, without Grafana.

It scrapes mailferry's /metrics (and /readyz) every second while mailferry runs, computes
the dashboard's queries itself (a rate over a short window, histogram_quantile by linear
interpolation within the buckets, as Prometheus does) and plots them with matplotlib.

By default it makes the run itself: the ignored test `a_run_for_the_dashboard_picture` of
tests/operations.rs (a real Dovecot, `mailferry run`, smtp-sink behind a relay address that
refuses one recipient and defers another, mail fed every second, the relay down from 40 % to
60 % of the run, an OAuth2 account and one whose grant is refused). As root, from the
repository:

    pip install --user matplotlib          # once; the test suite does not need it
    python3 deploy/grafana/render.py       # 120 s; writes deploy/grafana/dashboard.png

Against a mailferry that runs already: `--url http://127.0.0.1:9425 --seconds 300`.
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text exposition -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def get(url, timeout=3):
    """(status code, body) of a GET, (0, '') if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""


def start_run(seconds):
    """Starts the feeding run; returns (process, port, events) once it says its port."""
    env = dict(os.environ, MAILFERRY_E2E="1", MAILFERRY_PICTURE_SECONDS=str(seconds))
    cmd = ["cargo", "test", "--test", "operations", "--", "--ignored", "--nocapture",
           "--exact", "a_run_for_the_dashboard_picture"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    port, events, ready = [None], [], threading.Event()

    def drain():
        for line in proc.stderr:
            m = re.search(r"metrics on 127\.0\.0\.1:(\d+)", line)
            if m:
                port[0] = int(m.group(1))
                ready.set()
            m = re.search(r"relay (down|back) at", line)
            if m:
                events.append((time.time(), m.group(1)))
            if "panicked" in line or line.startswith("error"):
                sys.stderr.write(line)
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(1800)  # the first build may take a while
    if port[0] is None:
        sys.exit("render: the run did not start (see the output above)")
    return proc, port[0], events


def scrape_loop(base, seconds, proc):
    """[(t, samples, readyz status)] every second for `seconds` or until the run ends."""
    points, t0 = [], time.time()
    while time.time() - t0 < seconds + 3:
        if proc is not None and proc.poll() is not None:
            break
        tick = time.time()
        code, body = get(base + "/metrics")
        if code == 200:
            ready, _ = get(base + "/readyz")
            points.append((tick, parse(body), ready))
        time.sleep(max(0.0, 1.0 - (time.time() - tick)))
    return points


class Series:
    """The scraped points, with the dashboard's query functions over them."""

    def __init__(self, points, window):
        self.points = points
        self.t0 = points[0][0]
        self.window = window
        self.t = [p[0] - self.t0 for p in points]

    def select(self, samples, name, match):
        for (n, labels), v in samples.items():
            d = dict(labels)
            if n == name and all(d.get(k) == want for k, want in match.items()):
                yield d, v

    def sums(self, i, name, by, match):
        out = {}
        for d, v in self.select(self.points[i][1], name, match):
            key = tuple(d.get(b, "") for b in by)
            out[key] = out.get(key, 0.0) + v
        return out

    def back(self, i):
        """The index `window` seconds before i (or the first)."""
        j = i
        while j > 0 and self.points[i][0] - self.points[j - 1][0] <= self.window:
            j -= 1
        return j

    def rate(self, name, by=(), **match):
        """sum by (by) (rate(name{match}[window])) -> {key: [per second, ...]}."""
        out = {}
        for i in range(len(self.points)):
            j = self.back(i)
            now, then = self.sums(i, name, by, match), self.sums(j, name, by, match)
            span = self.points[i][0] - self.points[j][0]
            for key, v in now.items():
                r = (v - then.get(key, 0.0)) / span if span > 0 else 0.0
                out.setdefault(key, [None] * len(self.points))[i] = max(r, 0.0)
        return out

    def gauge(self, name, by=(), **match):
        out = {}
        for i in range(len(self.points)):
            for key, v in self.sums(i, name, by, match).items():
                out.setdefault(key, [None] * len(self.points))[i] = v
        return out

    def quantile(self, q, name, by=(), **match):
        """histogram_quantile(q, sum by (le, by) (rate(name_bucket[window])))."""
        out = {}
        for i in range(len(self.points)):
            j = self.back(i)
            now = self.sums(i, name + "_bucket", tuple(by) + ("le",), match)
            then = self.sums(j, name + "_bucket", tuple(by) + ("le",), match)
            groups = {}
            for key, v in now.items():
                le = float(key[-1])
                groups.setdefault(key[:-1], []).append((le, v - then.get(key, 0.0)))
            for key, buckets in groups.items():
                out.setdefault(key, [None] * len(self.points))[i] = histogram_quantile(q, buckets)
        return out


def histogram_quantile(q, buckets):
    """Prometheus's interpolation within cumulative buckets [(le, count)]; None when empty."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def draw(series, events, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series
    down = []
    start = None
    for at, what in events:
        if what == "down":
            start = at - s.t0
        elif start is not None:
            down.append((start, at - s.t0))
            start = None
    if start is not None:
        down.append((start, s.t[-1]))

    fig, axes = plt.subplots(4, 3, figsize=(18, 16))
    fig.suptitle(title, fontsize=13)

    def panel(ax, name, lines, unit=""):
        ax.set_title(name, fontsize=11, loc="left")
        for label, values in lines:
            ax.plot(s.t, [float("nan") if v is None else v for v in values], label=label,
                    linewidth=1.4)
        for a, b in down:
            ax.axvspan(a, b, color="red", alpha=0.08)
        ax.set_xlim(0, s.t[-1] if s.t else 1)
        ax.set_xlabel("seconds into the run", fontsize=8)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if lines:
            ax.legend(fontsize=7, loc="upper left")

    def named(d, fmt):
        return [(fmt.format(*k), v) for k, v in sorted(d.items())]

    panel(axes[0][0], "Deliveries by outcome (per recipient)",
          named(s.rate("mailferry_deliveries_total", ("outcome",)), "{}"), "per second")
    fetched = named(s.rate("mailferry_messages_fetched_total", ("account",), account="catchall"),
                    "{} fetched")
    deleted = named(s.rate("mailferry_upstream_deleted_total", ("account",), account="catchall"),
                    "{} deleted upstream")
    panel(axes[0][1], "Messages fetched", fetched + deleted, "per second")
    panel(axes[0][2], "Poll errors by kind",
          named(s.rate("mailferry_poll_errors_total", ("kind",)), "{}"), "per second")
    pd = []
    for q in (0.5, 0.95):
        pd += named(s.quantile(q, "mailferry_pass_duration_seconds", ("account",)),
                    "{} p%d" % round(q * 100))
    panel(axes[1][0], "Pass duration", pd, "seconds")
    rl = []
    for q in (0.5, 0.95, 0.99):
        rl += named(s.quantile(q, "mailferry_relay_transaction_duration_seconds"),
                    "p%d" % round(q * 100))
    panel(axes[1][1], "Relay transaction latency", rl, "seconds")
    quarantine = named(s.gauge("mailferry_quarantined_messages", ("account",)), "{} in quarantine")
    quarantine += named(s.gauge("mailferry_quarantined_total", ("reason",)), "quarantined: {}")
    panel(axes[1][2], "Quarantine",
          [(k, v) for k, v in quarantine if any(x for x in v if x)], "messages")
    ages = []
    now = [p[0] for p in s.points]
    for (acct,), v in sorted(s.gauge("mailferry_last_success_timestamp_seconds",
                                     ("account",)).items()):
        ages.append((acct, [None if x is None else now[i] - x for i, x in enumerate(v)]))
    interval = s.gauge("mailferry_poll_interval_seconds", ("account",)).get(("catchall",))
    if interval:
        ages.append(("3 x poll interval (alert)", [None if x is None else 3 * x for x in interval]))
    panel(axes[2][0], "Last successful pass (age)", ages, "seconds")
    wk = named(s.gauge("mailferry_upstream_waiting_messages", ("account",), account="catchall"),
               "{} waiting")
    wk += named(s.gauge("mailferry_upstream_kept_messages", ("account",), account="catchall"),
                "{} kept")
    panel(axes[2][1], "Messages upstream: waiting and kept", wk, "messages")
    ready = [("relay up", s.gauge("mailferry_relay_up").get((), [])),
             ("state store writable",
              [None if x is None else x - 0.03
               for x in s.gauge("mailferry_state_store_writable").get((), [])]),
             ("/readyz 200", [1.03 if p[2] == 200 else 0.03 for p in s.points])]
    panel(axes[2][2], "Readiness", ready)
    axes[2][2].set_ylim(-0.2, 1.3)
    left = [(k, [None if x is None else max(x - now[i], 0.0) for i, x in enumerate(v)])
            for k, v in named(s.gauge("mailferry_oauth_token_expiry_seconds", ("account",)), "{}")]
    panel(axes[3][0], "OAuth2 access token: time left", left, "seconds")
    panel(axes[3][1], "OAuth2 failures (since start)",
          named(s.gauge("mailferry_oauth_failures_total", ("account", "reason")), "{} {}"),
          "count")
    panel(axes[3][2], "Bytes fetched",
          named(s.rate("mailferry_fetched_bytes_total", ("account",), account="catchall"),
                "{} bytes/s"), "bytes per second")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running mailferry's metrics.listen, e.g. http://127.0.0.1:9425")
    ap.add_argument("--seconds", type=int, default=120, help="how long to scrape (default 120)")
    ap.add_argument("--window", type=float, default=10.0, help="rate window, seconds (default 10)")
    ap.add_argument("--out", default=os.path.join(HERE, "dashboard.png"))
    args = ap.parse_args()
    proc, events = None, []
    if args.url:
        base = args.url.rstrip("/")
    else:
        proc, port, events = start_run(args.seconds)
        base = "http://127.0.0.1:%d" % port
    points = scrape_loop(base, args.seconds, proc)
    if proc is not None:
        proc.wait()
    if len(points) < 5:
        sys.exit("render: only %d scrapes" % len(points))
    title = ("mailferry dashboard panels over a real run: Dovecot -> mailferry run -> smtp-sink, "
             "%d s scraped every second (red: relay down)" % round(points[-1][0] - points[0][0]))
    draw(Series(points, args.window), events, args.out, title)
    print("render: %d scrapes -> %s" % (len(points), args.out))


if __name__ == "__main__":
    main()
