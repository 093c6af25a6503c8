#!/usr/bin/env python3
"""Renders config/grafana/rpcgate.json's panels from a real gateway, as the
README's picture of the dashboard (Grafana itself is not packaged here).

It starts a locator (routing group `canary`: echo-v1 3, echo-v2 1), the
echo v1/v2, hello and ticker demo apps and a gateway on loopback, drives
them with examples/chaos_load for SECONDS (group requests, hello, unknown
services, SSE streams; halfway the group's weights change to 1:1), scrapes
/metrics every STEP seconds, evaluates each panel's PromQL (the small
subset the dashboard uses: sum by, rate, increase, histogram_quantile, `/`
with ignoring/group_left) over the scrapes, and draws the panels where the
dashboard's gridPos puts them. Loopback only; bounded; everything it
started is stopped.

  cargo build --release --bin rpcgate --example chaos_load
  config/grafana/render.py [--bin-dir target/release] [--seconds 60] [--out config/grafana/rpcgate.png]
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("installing python3-matplotlib (apt)...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3-matplotlib"], check=True,
                       stdout=subprocess.DEVNULL)
        if os.environ.get("RPCGATE_RENDER_REEXEC"):
            sys.exit("render.py: matplotlib is still missing after the install")
        # Debian's package is for Debian's python3, which may not be this one.
        os.environ["RPCGATE_RENDER_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)


# --- Prometheus text ----------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{name: {frozenset(labels): value}}"""
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.setdefault(m.group(1), {})[labels] = value
    return out


# --- the PromQL subset ----------------------------------------------------

TOKEN = re.compile(r'\s*(=~|!=|[(){}\[\],/=]|"(?:[^"\\]|\\.)*"|[A-Za-z_:][A-Za-z0-9_:]*|[0-9.]+[a-z]*)')


def tokenize(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            if expr[pos:].strip() == "":
                break
            raise ValueError(f"cannot read {expr[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class Parser:
    """expr := term [ '/' [ignoring(...)] [group_left] term ]"""

    def __init__(self, expr):
        self.t = tokenize(expr)
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want=None):
        tok = self.peek()
        if want is not None and tok != want:
            raise ValueError(f"expected {want!r}, got {tok!r} in {' '.join(self.t)}")
        self.i += 1
        return tok

    def labels(self):
        self.take("(")
        names = []
        while self.peek() != ")":
            names.append(self.take())
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return names

    def expr(self):
        left = self.term()
        if self.peek() == "/":
            self.take("/")
            ignoring = []
            if self.peek() == "ignoring":
                self.take()
                ignoring = self.labels()
            if self.peek() == "group_left":
                self.take()
            right = self.term()
            return ("div", left, right, ignoring)
        return left

    def term(self):
        tok = self.take()
        if tok == "sum":
            by = None
            if self.peek() == "by":
                self.take()
                by = self.labels()
            self.take("(")
            inner = self.expr()
            self.take(")")
            return ("sum", by, inner)
        if tok in ("rate", "increase"):
            self.take("(")
            sel = self.selector(self.take())
            self.take("[")
            self.take()  # the window: the renderer's own
            self.take("]")
            self.take(")")
            return (tok, sel)
        if tok == "histogram_quantile":
            self.take("(")
            q = float(self.take())
            self.take(",")
            inner = self.expr()
            self.take(")")
            return ("quantile", q, inner)
        return ("instant", self.selector(tok))

    def selector(self, name):
        matchers = []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label, op, value = self.take(), self.take(), self.take()
                matchers.append((label, op, json.loads(value)))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        return (name, matchers)


def select(scrape, sel):
    name, matchers = sel
    out = {}
    for labels, value in scrape.get(name, {}).items():
        d = dict(labels)
        ok = True
        for label, op, want in matchers:
            have = d.get(label, "")
            if op == "=":
                ok &= have == want
            elif op == "!=":
                ok &= have != want
            elif op == "=~":
                ok &= re.fullmatch(want, have) is not None
        if ok:
            out[labels] = value
    return out


def evaluate(node, scrapes, i, window):
    """The instant vector of `node` at scrape i ({labels: value})."""
    kind = node[0]
    if kind == "instant":
        return select(scrapes[i][1], node[1])
    if kind in ("rate", "increase"):
        j = max(0, i - window)
        if j == i:
            return {}
        (t0, s0), (t1, s1) = scrapes[j], scrapes[i]
        before, now = select(s0, node[1]), select(s1, node[1])
        out = {}
        for labels, v in now.items():
            delta = v - before.get(labels, 0.0)
            if delta < 0:  # a counter reset
                delta = v
            out[labels] = delta / (t1 - t0) if kind == "rate" else delta
        return out
    if kind == "sum":
        inner = evaluate(node[2], scrapes, i, window)
        out = {}
        for labels, v in inner.items():
            key = frozenset((k, val) for k, val in labels if node[1] is not None and k in node[1])
            out[key] = out.get(key, 0.0) + v
        return out
    if kind == "div":
        left = evaluate(node[1], scrapes, i, window)
        right = evaluate(node[2], scrapes, i, window)
        out = {}
        for labels, v in left.items():
            key = frozenset((k, val) for k, val in labels if k not in node[3])
            d = right.get(key)
            if d:
                out[labels] = v / d
        return out
    if kind == "quantile":
        inner = evaluate(node[2], scrapes, i, window)
        groups = {}
        for labels, v in inner.items():
            d = dict(labels)
            le = float(d.pop("le"))
            groups.setdefault(frozenset(d.items()), []).append((le, v))
        out = {}
        for labels, buckets in groups.items():
            q = histogram_quantile(node[1], sorted(buckets))
            if q is not None:
                out[labels] = q
        return out
    raise ValueError(kind)


def histogram_quantile(q, buckets):
    """Prometheus' rule: linear within the bucket the rank falls in."""
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1)
        prev_le, prev_count = le, count
    return prev_le


def legend(fmt, labels):
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt).strip()


# --- the run ----------------------------------------------------------------

def run(args):
    bins = os.path.abspath(args.bin_dir)
    rpcgate, load = os.path.join(bins, "rpcgate"), os.path.join(bins, "examples", "chaos_load")
    for b in (rpcgate, load):
        if not os.access(b, os.X_OK):
            sys.exit(f"render.py: {b} is missing: cargo build --release --bin rpcgate --example chaos_load")
    loc, loc_admin, gw, admin = "127.0.0.1:20653", "127.0.0.1:20654", "127.0.0.1:18680", "127.0.0.1:19690"
    tmp = tempfile.mkdtemp(prefix="rpcgate-render.")
    with open(os.path.join(tmp, "locator.toml"), "w") as f:
        f.write(f'listen = "{loc}"\nadmin = "{loc_admin}"\n[groups.canary]\n"echo-v1" = 3\n"echo-v2" = 1\n')
    with open(os.path.join(tmp, "rpcgate.toml"), "w") as f:
        f.write(f'listen = "{gw}"\nadmin = "{admin}"\nlocators = ["{loc}"]\n'
                '[pool]\nsize = 8\nlifespan_ms = 20000\n')
    procs = []
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(*cmd):
        p = subprocess.Popen(list(cmd), **quiet)
        procs.append(p)
        return p

    def wait_url(url, what):
        for _ in range(100):  # 10 s at most
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"render.py: {what} never answered at {url}")

    try:
        start(rpcgate, "locator", "--log-level", "warn", "--config", os.path.join(tmp, "locator.toml"))
        wait_url(f"http://{loc_admin}/groups", "the locator")
        for app, version in (("echo", "v1"), ("echo", "v2"), ("hello", None), ("ticker", None)):
            cmd = [rpcgate, "demo-app", app, "--log-level", "warn", "--locator", loc]
            if version:
                cmd += ["--app-version", version]
            start(*cmd)
        start(rpcgate, "--log-level", "warn", "--config", os.path.join(tmp, "rpcgate.toml"))
        wait_url(f"http://{gw}/hello/http/", "the gateway")
        wait_url(f"http://{gw}/canary/http/", "the group")
        secs = str(args.seconds)
        for path, conns, rate in (("/canary/http/", 16, 800), ("/hello/http/", 8, 400),
                                  ("/nope/http/", 1, 5), ("/ticker/http/?interval_ms=50&count=40", 20, 8)):
            start(load, gw, path, "--conns", str(conns), "--secs", secs, "--rate", str(rate),
                  "--timeout-ms", "5000")
        scrapes = []
        started = time.monotonic()
        changed = False
        while True:
            elapsed = time.monotonic() - started
            if elapsed > args.seconds + args.step:
                break
            with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
                scrapes.append((time.monotonic(), parse(r.read().decode())))
            if not changed and elapsed >= args.seconds / 2:
                req = urllib.request.Request(f"http://{loc_admin}/groups/canary", method="PUT",
                                             data=b'{"echo-v1": 1, "echo-v2": 1}')
                urllib.request.urlopen(req, timeout=5).close()
                changed = True
            time.sleep(max(0.0, args.step - (time.monotonic() - started - elapsed)))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return scrapes


def draw(dashboard, scrapes, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bg, panel_bg, fg, grid = "#181b1f", "#111217", "#ccccdc", "#2c3235"
    colors = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
              "#705da0", "#37872d", "#fade2a"]
    window = max(1, round(args.window / args.step))
    t0 = scrapes[0][0]
    panels = dashboard["panels"]
    head = 1.5  # grid units above the first row: the dashboard's header
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + head
    panels = [dict(p, gridPos=dict(p["gridPos"], y=p["gridPos"]["y"] + head)) for p in panels]
    unit_w, unit_h = 0.7, 0.36  # inches per grid unit
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h), facecolor=bg)
    fig.text(0.005, 1 - 0.7 / rows, f"{dashboard['title']}   service: All   "
             f"(rendered from a live gateway, {args.seconds} s of load; canary weights 3:1 → 1:1 halfway)",
             color=fg, fontsize=12, va="center")

    def box(gp, pad=0.08):
        x = gp["x"] / 24 + pad / (24 * unit_w)
        w = gp["w"] / 24 - 2 * pad / (24 * unit_w)
        top = 1 - gp["y"] / rows
        h = gp["h"] / rows
        return [x, 1 - (gp["y"] + gp["h"]) / rows, w, h], top

    for p in panels:
        gp = p["gridPos"]
        if p["type"] == "row":
            _, top = box(gp)
            fig.text(gp["x"] / 24 + 0.003, top - 0.5 / rows, p["title"], color=fg, fontsize=12,
                     fontweight="bold", va="center")
            continue
        rect, _ = box(gp)
        # Room for the title above and the legend below.
        title_h, legend_h = 0.9 / rows, 2.2 / rows
        rect = [rect[0] + 0.035, rect[1] + legend_h, rect[2] - 0.04, rect[3] - title_h - legend_h]
        ax = fig.add_axes(rect, facecolor=panel_bg)
        ax.set_title(p["title"], color=fg, fontsize=9, loc="left")
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        styles = {}
        for o in p["fieldConfig"].get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "custom.lineStyle":
                    styles[o["matcher"]["options"]] = "--" if prop["value"]["fill"] == "dash" else ":"
        n = 0
        for target in p["targets"]:
            expr = target["expr"].replace("$service", ".*").replace("$__rate_interval", "1m")
            tree = Parser(expr).expr()
            series = {}
            for i in range(len(scrapes)):
                for labels, v in evaluate(tree, scrapes, i, window).items():
                    if math.isfinite(v):
                        series.setdefault(labels, []).append((scrapes[i][0] - t0, v))
            for labels in sorted(series, key=lambda l: sorted(l)):
                pts = series[labels]
                if not any(y for _, y in pts):
                    continue  # a series that stays at 0 only crowds the legend
                xs, ys = [x for x, _ in pts], [y for _, y in pts]
                if unit == "percentunit":
                    ys = [y * 100 for y in ys]
                elif unit == "s":
                    ys = [y * 1000 for y in ys]
                ax.plot(xs, ys, styles.get(target["refId"], "-"), color=colors[n % len(colors)],
                        linewidth=1.2, label=legend(target.get("legendFormat", ""), labels)[:38])
                n += 1
        ax.tick_params(colors=fg, labelsize=7)
        for side in ax.spines.values():
            side.set_color(grid)
        ax.grid(color=grid, linewidth=0.5)
        ax.set_xlim(0, args.seconds + args.step)
        label = {"reqps": "req/s", "ops": "ops/s", "percentunit": "%", "s": "ms"}.get(unit, "")
        if label:
            ax.set_ylabel(label, color=fg, fontsize=7)
        if n == 0:
            ax.text(0.5, 0.5, "No data", color=fg, ha="center", va="center", transform=ax.transAxes)
        else:
            ax.set_ylim(bottom=0)
            ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1), ncol=2 if gp["w"] <= 8 else 4,
                      fontsize=6, frameon=False, labelcolor=fg, handlelength=1.5)
    fig.savefig(args.out, dpi=args.dpi, facecolor=bg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "..", "target"))
    ap.add_argument("--bin-dir", default=os.path.join(target, "release"))
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--step", type=float, default=2.0, help="seconds between scrapes")
    ap.add_argument("--window", type=float, default=10.0, help="the rate window, seconds")
    ap.add_argument("--dpi", type=int, default=72)
    ap.add_argument("--dashboard", default=os.path.join(HERE, "rpcgate.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "rpcgate.png"))
    args = ap.parse_args()
    if not 5 <= args.seconds <= 600:
        sys.exit("render.py: --seconds 5..600")
    need_matplotlib()
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    scrapes = run(args)
    draw(dashboard, scrapes, args)
    print(f"wrote {args.out} ({os.path.getsize(args.out) // 1024} KB, {len(scrapes)} scrapes)")


if __name__ == "__main__":
    main()
