#!/usr/bin/env python3
"""corofuse benchmarks: builds optimised binaries, mounts each configuration, runs the workload
matrix, unmounts, and writes bench/RESULTS.md and bench/results.png (see bench/run --help).

Every figure is the median of --repeat runs (default 3) with min and max; ratios are taken against
the backing tmpfs measured in the same run (the kernel-native ceiling). These machines are shared:
compare ratios within one run, not absolute numbers across runs.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024 * 1024


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def mounted_device(path):
    """st_dev of the mount at `path` if it is a FUSE mount point, else None (never stats the mount)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == path and " - fuse" in line:
                major, minor = parts[2].split(":")
                return int(major), int(minor)
    return None


def detach(path):
    subprocess.run(["umount", "-l", path], capture_output=True)


def abort_connection(dev):
    if dev is None:
        return
    p = f"/sys/fs/fuse/connections/{dev[1]}/abort"
    try:
        with open(p, "w") as f:
            f.write("1")
    except OSError:
        pass


class Tmpfs:
    """A fresh tmpfs (the backing directory and the kernel-native ceiling)."""

    def __init__(self, size="16G"):
        self.dir = tempfile.mkdtemp(prefix="corofuse-bench-tmpfs-")
        run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.dir])

    def close(self):
        detach(self.dir)
        os.rmdir(self.dir)


class RequestCounter:
    """The FUSE requests the kernel sent one connection, counted by the kernel's fuse:fuse_request_send
    tracepoint (perf, filtered by the connection): the same count for every server, libfuse's too."""

    def __init__(self):
        self.proc = None
        self.count = None
        self.out = None

    def start(self, dev):
        if not shutil.which("perf") or dev is None:
            return
        if not os.path.isdir("/sys/kernel/tracing/events/fuse"):
            subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"], capture_output=True)
        self.out = tempfile.NamedTemporaryFile(prefix="corofuse-bench-perf-", suffix=".txt", delete=False).name
        self.proc = subprocess.Popen(["perf", "stat", "-a", "-x,", "-o", self.out, "-e", "fuse:fuse_request_send",
                                      "--filter", f"connection == {dev[1]}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
            with open(self.out) as f:
                for line in f:
                    fields = line.strip().split(",")
                    if len(fields) > 2 and fields[2] == "fuse:fuse_request_send" and fields[0].isdigit():
                        self.count = int(fields[0])
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        finally:
            self.proc = None
            os.unlink(self.out)


class Server:
    """One FUSE server on a fresh mount point: started, waited for, stopped with SIGTERM (its own
    PID only), its rusage and counters collected; a mount it leaves is detached and aborted."""

    def __init__(self, binary, args, leading=(), libfuse=False, stats=True):
        self.dir = tempfile.mkdtemp(prefix="corofuse-bench-mnt-")
        self.logpath = self.dir + ".log"
        self.logfile = open(self.logpath, "w")
        self.libfuse = libfuse
        # libfuse's passthrough_hp: [options] SOURCE MOUNTPOINT, in the foreground; ours: [SOURCE]
        # MOUNTPOINT --stats [options] (--stats: the counters at exit; `stats` False leaves it out).
        ours = [binary, *leading, self.dir, *(["--stats"] if stats else []), *args]
        cmd = [binary, "--foreground", *args, *leading, self.dir] if libfuse else ours
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT)
        self.rusage = None
        self.dev = None
        self.requests = RequestCounter()
        deadline = time.time() + 20
        while time.time() < deadline:
            self.dev = mounted_device(self.dir)
            if self.dev and (libfuse or "serving" in self.log()):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited: {self.log()[-2000:]}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"{binary} did not mount within 20 s: {self.log()[-2000:]}")
        time.sleep(0.2)
        self.idle_rss_kib = self.rss_kib()
        self.requests.start(self.dev)

    def threads(self):
        """The names of the server's threads (libfuse names its ring threads fuse-ring-N)."""
        names = []
        for t in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{t}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                pass
        return names

    def log(self):
        with open(self.logpath) as f:
            return f.read()

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        self.requests.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.time() + 30
            while time.time() < deadline:
                pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.rusage = rusage
                    self.proc.returncode = status
                    break
                time.sleep(0.05)
            else:
                self.proc.kill()
                _, _, self.rusage = os.wait4(self.proc.pid, 0)
        if mounted_device(self.dir):
            detach(self.dir)
            abort_connection(self.dev)
        self.logfile.close()
        text = self.log()
        os.unlink(self.logpath)
        os.rmdir(self.dir)
        return text


def counters(text):
    total = 0
    per = {}
    for m in re.finditer(r"^counter (\S+) dev=(\d+) ring=(\d+) errors=(\d+)", text, re.M):
        n = int(m.group(2)) + int(m.group(3))
        per[m.group(1)] = n
        total += n
    return total, per


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def fio(directory, name, rw, bs, direct, size, engine="sync", iodepth=1, numjobs=2, runtime=None, filename=None, readonly=False):
    cmd = ["fio", f"--name={name}", f"--rw={rw}", f"--bs={bs}", f"--direct={1 if direct else 0}", f"--ioengine={engine}",
           f"--iodepth={iodepth}", f"--numjobs={numjobs}", f"--size={size}", "--group_reporting", "--output-format=json"]
    cmd.append(f"--filename={filename}" if filename else f"--directory={directory}")
    if runtime:
        cmd += [f"--runtime={runtime}", "--time_based"]
    if readonly:
        cmd.append("--readonly")
    r = run(cmd, timeout=900)
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return {"MiB/s": side["bw"] / 1024.0, "IOPS": side["iops"]}


def lay_out(directory, size):
    """The fio data files the read workloads use, written once (fio names them NAME.JOB.0)."""
    for job in range(2):
        path = os.path.join(directory, f"data.{job}.0")
        if not os.path.exists(path):
            fio(directory, "data", "write", "1M", False, size, numjobs=1, filename=path)


def meta(binary, *args):
    r = run([binary, *map(str, args)], timeout=900)
    name, value, unit = r.stdout.split()
    return float(value)


def summarize(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


WORKLOADS = [
    # name, fio rw, direct
    ("read direct", "read", True),
    ("read buffered", "read", False),
    ("randread direct", "randread", True),
    ("randread buffered", "randread", False),
    ("write direct", "write", True),
    ("write buffered", "write", False),
]


def measure_config(name, directory, a, bins):
    """The whole matrix on one mounted directory; returns {workload: summary}."""
    out = {}
    lay_out(directory, a.size)
    for wl, rw, direct in WORKLOADS:
        vals = []
        for _ in range(a.repeat):
            drop_caches()
            if rw == "write":
                vals.append(fio(directory, "w", rw, "1M", direct, a.size)["MiB/s"])
            else:
                # read the laid-out files: fio's job j of "data" reads data.j.0
                vals.append(fio(directory, "data", rw, "1M", direct, a.size)["MiB/s"])
        out[wl] = summarize(vals)
        log(f"{name}: {wl}: {out[wl]['median']:.0f} MiB/s")
    vals = []
    for _ in range(a.repeat):
        vals.append(fio(directory, "data", "randread", "4k", True, a.size, engine="io_uring", iodepth=32, runtime=a.runtime)["IOPS"])
    out["4k randread io_uring qd32"] = summarize(vals)
    log(f"{name}: 4k randread: {out['4k randread io_uring qd32']['median']:.0f} IOPS")
    for f in os.listdir(directory):
        if f.startswith("w."):
            os.unlink(os.path.join(directory, f))
    # Metadata.
    stat_target = os.path.join(directory, "data.0.0")

    def attempt(key, *args):
        """A metadata figure, or the reason it could not be measured (kept in the report)."""
        try:
            out[key] = summarize([meta(bins["meta"], *args) for _ in range(a.repeat)])
            log(f"{name}: {key}: {out[key]['median']:.2f}")
        except RuntimeError as e:
            out[key] = {"error": str(e).split(": ")[-1][:80]}
            log(f"{name}: {key} failed: {e}")
            for f in os.listdir(directory):  # what a failed run left behind
                p = os.path.join(directory, f)
                if f.startswith("c") and f[1:].isdigit():
                    os.unlink(p)
                elif f == "list":
                    shutil.rmtree(p, ignore_errors=True)

    attempt("stat", "stat", stat_target, a.stats)
    attempt("stat 2 threads", "stat", stat_target, a.stats // 2, 2)
    attempt("create+unlink", "create", directory, a.files)
    attempt("readdir", "readdir", directory, a.entries, 3)
    attempt("readdir+stat", "lsl", directory, a.entries, 3)
    for job in range(2):
        os.unlink(os.path.join(directory, f"data.{job}.0"))
    return out


def build(a):
    targets = ["//examples/memfs", "//examples/memtree", "//examples/passthrough", "//bench:nullfs", "//bench:meta"]
    run(["bazel", "build", "--config=opt", *targets], timeout=3600, cwd=ROOT)
    bin_dir = run(["bazel", "info", "--config=opt", "bazel-bin"], cwd=ROOT).stdout.strip()
    return {
        "memfs": f"{bin_dir}/examples/memfs/memfs",
        "memtree": f"{bin_dir}/examples/memtree/memtree",
        "passthrough": f"{bin_dir}/examples/passthrough/passthrough",
        "nullfs": f"{bin_dir}/bench/nullfs",
        "meta": f"{bin_dir}/bench/meta",
    }


def build_libfuse(a):
    """libfuse's example/passthrough_hp from Debian's own fuse3 source (>= 3.18, from sid through the
    private apt configuration of tools/debian-kernel), built with meson into the cache, io_uring on.
    Returns (binary, None) or (None, why)."""
    if not a.libfuse:
        return None, "--no-libfuse"
    for tool in ("meson", "ninja", "pkg-config"):
        if not shutil.which(tool):
            return None, f"{tool} is missing (apt-get install meson ninja-build pkg-config libnuma-dev)"
    r = run([os.path.join(ROOT, "tools", "debian-kernel"), "source", "fuse3", "3.18"], timeout=1800, check=False)
    if r.returncode != 0:
        return None, f"no fuse3 >= 3.18 source: {r.stderr.strip()[-300:]}"
    src = r.stdout.strip().splitlines()[-1]
    version = os.path.basename(os.path.dirname(src))
    build_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(src))), "..", "libfuse-build", version)
    build_dir = os.path.normpath(build_dir)
    binary = os.path.join(build_dir, "example", "passthrough_hp")
    if not os.access(binary, os.X_OK):
        shutil.rmtree(build_dir, ignore_errors=True)
        r = run(["meson", "setup", build_dir, "-Denable-io-uring=true", "-Dexamples=true", "-Dutils=false", "-Dtests=false",
                 "-Duseroot=false", "-Dinitscriptdir=", "--buildtype=release"], cwd=src, timeout=600, check=False)
        # Without libnuma (or liburing) meson quietly builds libfuse without its ring.
        config = os.path.join(build_dir, "fuse_config.h")
        if r.returncode != 0 or not os.path.exists(config) or "HAVE_URING" not in open(config).read():
            return None, f"libfuse {version} configured without io_uring (libnuma-dev and liburing-dev installed?)"
        r = run(["ninja", "-C", build_dir, "example/passthrough_hp"], timeout=1200, check=False)
        if r.returncode != 0:
            return None, f"building libfuse {version} failed: {r.stdout.strip()[-300:]}"
    log(f"libfuse {version}: {binary}")
    return binary, None


def server_report(server, text, busy_rss_kib):
    total, per = counters(text)
    if server.requests.count is not None:
        total = server.requests.count  # the kernel's own count, the same for every server
    ru = server.rusage
    cpu = (ru.ru_utime + ru.ru_stime) if ru else 0.0
    m = re.search(r"buffers: ([\d.]+) MiB", text)
    return {
        "requests": total,
        "cpu_s": cpu,
        "cpu_us_per_request": cpu * 1e6 / total if total else 0.0,
        "idle_rss_mib": server.idle_rss_kib / 1024.0,
        "busy_rss_mib": busy_rss_kib / 1024.0,
        "peak_rss_mib": (ru.ru_maxrss / 1024.0) if ru else 0.0,
        "buffers_mib": float(m.group(1)) if m else 0.0,
        "per_opcode": per,
    }


CONFIGS = [
    ("native tmpfs", None, None),
    ("memfs ring", "memfs", ["--transport", "ring"]),
    ("memfs dev", "memfs", ["--transport", "dev"]),
    # memfs's behaviour on the node layer (corofuse/node.hpp): the layer's cost against memfs's raw
    # handlers, measured right after them.
    ("memtree ring", "memtree", ["--transport", "ring"]),
    ("memtree dev", "memtree", ["--transport", "dev"]),
    ("passthrough ring", "passthrough", ["--transport", "ring"]),
    ("passthrough dev", "passthrough", ["--transport", "dev"]),
    ("passthrough kernel", "passthrough", ["--transport", "ring", "--passthrough"]),
    # The competitor: libfuse's example/passthrough_hp over the same tmpfs, without kernel
    # passthrough (so it serves READ and WRITE itself, as ours does) and with --nocache (attribute
    # and entry timeouts 0, no writeback cache: what -o attr_timeout=0 asks of ours).
    ("libfuse io_uring", "libfuse", ["--nopassthrough", "--nocache", "-o", "io_uring"]),
    ("libfuse classic", "libfuse", ["--nopassthrough", "--nocache"]),
]


def start_server(name, fs, args, source, bins):
    """Mounts configuration `name` (server kind `fs`, with `args`) over the directory `source`."""
    kind = fs.split("@")[0]
    leading = [source] if kind in ("passthrough", "libfuse") else []
    extra = ["--size", "8G"] if kind in ("memfs", "memtree") else []
    if kind == "libfuse":
        server = Server(bins[fs], args, leading, libfuse=True)
        if "io_uring" in args and not any(t.startswith("fuse-ring") for t in server.threads()):
            # libfuse falls back to /dev/fuse silently when its ring cannot start
            why = server.log()[-500:]
            server.stop()
            raise RuntimeError(f"{name}: libfuse did not start its io_uring ring: {why}")
        return server
    # attr_timeout=0: every stat(2) is a GETATTR round trip, the figure measured
    return Server(bins[fs], ["-o", "attr_timeout=0", *args, *extra], leading)


# Configurations profiled with --perf (besides the null filesystem): ours and the competitor's.
PROFILED = ("passthrough ring", "libfuse io_uring")


def perf_report(pid, cmd, path, system_wide=False):
    """perf record of process `pid` (or of the whole machine) while `cmd` runs; the top of the
    report by symbol into `path`, and the context switches per second of the server's threads."""
    data = os.path.join(tempfile.gettempdir(), "corofuse-perf.data")
    target = ["-a"] if system_wide else ["-p", str(pid)]
    rec = subprocess.Popen(["perf", "record", "-g", "-o", data, *target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        run(cmd, timeout=600)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
    sort = ["--sort", "comm,dso,sym"] if system_wide else []
    rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--percent-limit", "1", "-g", "none", *sort],
              timeout=300, check=False)
    with open(path, "w") as f:
        f.write(f"# {' '.join(cmd)}\n")
        f.write(rep.stdout)
    os.unlink(data)


def profile_config(server, name, a, bins):
    """Profiles of one server doing 4 KiB random reads (qd32, io_uring) and stat(2)s: the server's
    own threads (where its CPU goes) and the whole machine (client, kernel and server together)."""
    out = os.path.join(a.out, "perf")
    os.makedirs(out, exist_ok=True)
    slug = name.replace(" ", "-")
    lay_out(server.dir, "256M")
    data = os.path.join(server.dir, "data.0.0")
    randread = ["fio", "--name=p", "--rw=randread", "--bs=4k", "--direct=1", "--numjobs=2", "--iodepth=32",
                "--ioengine=io_uring", "--size=256M", f"--filename={data}", "--readonly", "--runtime=5", "--time_based",
                "--group_reporting"]
    stat = [bins["meta"], "stat", data, "100000"]
    perf_report(server.proc.pid, randread, os.path.join(out, f"{slug}-randread4k.txt"))
    perf_report(server.proc.pid, randread, os.path.join(out, f"{slug}-randread4k-system.txt"), system_wide=True)
    perf_report(server.proc.pid, stat, os.path.join(out, f"{slug}-stat.txt"))
    for job in range(2):
        os.unlink(os.path.join(server.dir, f"data.{job}.0"))


SLOW_CONFIGS = ("passthrough ring", "passthrough dev", "libfuse io_uring", "libfuse classic")


def slow_backing(a, bins):
    """The servers over a slow backing store: the null filesystem with every READ delayed
    (--read-delay-us), mounted as the passthrough's SOURCE. Two readers keep slow reads in flight
    (4 KiB, direct, one at a time each, one per CPU) while stat(2)s of the mount's root (not
    delayed) measure whether the queues still serve: a server whose queue thread waits in a read
    holds every other request routed to it."""
    out = {"delay_us": a.slow_delay_us, "configs": {}}
    source = Server(bins["nullfs"], ["-o", "attr_timeout=0", "--transport", "ring", "--read-delay-us", str(a.slow_delay_us)])
    try:
        for name, fs, args in CONFIGS:
            if name not in SLOW_CONFIGS or (a.only and name not in a.only):
                continue
            if fs == "libfuse" and not bins.get("libfuse"):
                continue
            server = start_server(name, fs, args, source.dir, bins)
            readers = None
            try:
                target = os.path.join(server.dir, "f")
                idle = summarize([meta(bins["meta"], "stat", server.dir, a.slow_stats) for _ in range(a.repeat)])
                readers = subprocess.Popen(
                    ["fio", "--name=slow", "--rw=randread", "--bs=4k", "--direct=1", "--ioengine=sync", "--numjobs=2",
                     "--size=4G", f"--filename={target}", "--readonly", "--runtime=600", "--time_based", f"--cpus_allowed=0-{os.cpu_count() - 1}",
                     "--cpus_allowed_policy=split", "--group_reporting", "--output-format=json"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                time.sleep(1.0)
                busy = summarize([meta(bins["meta"], "stat", server.dir, a.slow_stats) for _ in range(a.repeat)])
                readers.send_signal(signal.SIGINT)  # fio stops and reports
                text, _ = readers.communicate(timeout=120)
                job = json.loads(text[text.index("{"):])["jobs"][0]
                readers = None
                out["configs"][name] = {"stat_idle_us": idle, "stat_busy_us": busy, "slow_read_iops": job["read"]["iops"]}
                log(f"slow backing: {name}: stat {idle['median']:.1f} us idle, {busy['median']:.1f} us beside slow reads "
                    f"({job['read']['iops']:.0f} reads/s)")
            finally:
                if readers:
                    readers.kill()
                    readers.wait()
                server.stop()
    finally:
        source.stop()
    return out


TRACE_VARIANTS = [("off", []), ("--stats", ["--stats"]), ("-d", ["-d"])]


def trace_cost(a, bins):
    """What recording costs: the null filesystem's GETATTR round trip on the ring with nothing
    recorded (the default), with --stats (counters and latency histograms) and with -d (a trace
    line per request, to the server's log file), in interleaved rounds."""
    runs = {name: [] for name, _ in TRACE_VARIANTS}
    for _ in range(a.repeat):
        for name, extra in TRACE_VARIANTS:
            server = Server(bins["nullfs"], ["-o", "attr_timeout=0", "--transport", "ring", *extra], stats=False)
            try:
                runs[name].append(meta(bins["meta"], "stat", os.path.join(server.dir, "f"), a.stats))
            finally:
                server.stop()
    out = {name: summarize(v) for name, v in runs.items()}
    log("recording: " + ", ".join(f"{n} {v['median']:.2f} us" for n, v in out.items()))
    return out


def host_matrix(a, bins):
    results = {"configs": {}, "servers": {}, "null": {}}
    configs = [c for c in CONFIGS if not a.only or c[0] in a.only or c[1] is None]
    if a.baseline:  # each server configuration again with the baseline's binaries, right after it
        configs = [x for c in configs
                   for x in ([c, (c[0] + " before", c[1] + "@before", c[2])] if c[1] in ("memfs", "passthrough") else [c])]
    for name, fs, args in configs:
        backing = Tmpfs()
        server = None
        try:
            directory = backing.dir
            if fs is not None:
                if fs == "libfuse" and not bins.get("libfuse"):
                    log(f"=== {name}: skipped ({bins.get('libfuse_why', 'not built')})")
                    continue
                server = start_server(name, fs, args, backing.dir, bins)
                directory = server.dir
            log(f"=== {name}")
            results["configs"][name] = measure_config(name, directory, a, bins)
            if server:
                busy = server.rss_kib()
                text = server.stop()
                results["servers"][name] = server_report(server, text, busy)
                server = None
                if a.perf and name in PROFILED:  # a fresh mount: perf's cost stays out of the figures above
                    server = start_server(name, fs, args, backing.dir, bins)
                    profile_config(server, name, a, bins)
                    server.stop()
                    server = None
        finally:
            if server:
                server.stop()
            backing.close()
    # The null filesystem: the framework plus the kernel, nothing else.
    for transport in ("ring", "dev"):
        name = f"nullfs {transport}"
        server = Server(bins["nullfs"], ["-o", "attr_timeout=0", "--transport", transport])
        try:
            target = os.path.join(server.dir, "f")
            stat_us = summarize([meta(bins["meta"], "stat", target, a.stats) for _ in range(a.repeat)])
            read = summarize([fio(None, "null", "read", "1M", True, "4G", filename=target, readonly=True)["MiB/s"]
                              for _ in range(a.repeat)])
            results["null"][name] = {"getattr_per_s": summarize([1e6 / v for v in stat_us["runs"]]), "read_1m": read}
            log(f"{name}: {results['null'][name]['getattr_per_s']['median']:.0f} GETATTR/s, {read['median']:.0f} MiB/s")
            if a.perf:
                profile(server, bins, target, transport, a)
            busy = server.rss_kib()
            text = server.stop()
            results["servers"][name] = server_report(server, text, busy)
            server = None
        finally:
            if server:
                server.stop()
    if a.slow_delay_us > 0:
        results["slow"] = slow_backing(a, bins)
    results["trace"] = trace_cost(a, bins)
    return results


def profile(server, bins, target, transport, a):
    """perf record of the server while it serves GETATTRs and 1 MiB READs; the top of the report."""
    out = os.path.join(a.out, "perf")
    os.makedirs(out, exist_ok=True)
    for what, cmd in (("getattr", [bins["meta"], "stat", target, "200000"]),
                      ("read", ["fio", "--name=p", "--rw=read", "--bs=1M", "--direct=1", "--numjobs=2", "--size=8G",
                                f"--filename={target}", "--readonly", "--ioengine=sync"])):
        data = os.path.join(tempfile.gettempdir(), f"corofuse-perf-{what}.data")
        rec = subprocess.Popen(["perf", "record", "-g", "-o", data, "-p", str(server.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run(cmd, timeout=600)
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
        rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--percent-limit", "1.5", "-g", "none"],
                  timeout=300, check=False)
        with open(os.path.join(out, f"nullfs-{transport}-{what}.txt"), "w") as f:
            f.write(rep.stdout)
        os.unlink(data)


def fmt(summary, digits=0):
    if "error" in summary:
        return f"failed: {summary['error']}"
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f})"


def write_report(a, results, bins):
    cfgs = results["configs"]
    native = cfgs.get("native tmpfs")
    names = list(cfgs)
    lines = []
    add = lines.append
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    add("# corofuse benchmarks")
    add("")
    add(f"Measured {datetime.date.today()} by `bench/run` on {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Debian 12, fio {run(['fio', '--version']).stdout.strip()}. Each figure is the median of {a.repeat} runs "
        "(min–max in brackets); \"× native\" is the median divided by the backing tmpfs's median in this same run. The "
        "machine is shared and noisy: compare ratios within this run, not absolute numbers across runs.")
    add("")
    add(f"Workloads: fio `--ioengine=sync --bs=1M --numjobs=2 --size={a.size}` per job (a single pass over each job's file; "
        "caches dropped before each run), and `--ioengine=io_uring --iodepth=32 --bs=4k --direct=1` for IOPS "
        f"({a.runtime} s). Metadata with `bench/meta`: stat(2) of a file with `-o attr_timeout=0` (every call a GETATTR "
        f"round trip on FUSE), from one thread and from two at once (the latency each caller sees), {a.files} files created and unlinked, a {a.entries}-entry directory listed, and listed with an lstat of each entry (ls -l). FUSE servers run "
        "with their defaults otherwise (depth 4, 1 MiB requests); passthrough mirrors a tmpfs, memfs holds the data itself.")
    add("")
    add("## Throughput (MiB/s)")
    add("")
    add("| workload | " + " | ".join(names) + " |")
    add("|---|" + "---|" * len(names))
    for wl, _, _ in WORKLOADS:
        row = [fmt(cfgs[n][wl]) + (f" **{cfgs[n][wl]['median'] / native[wl]['median']:.2f}×**" if native and n != "native tmpfs" else "")
               for n in names]
        add(f"| {wl} | " + " | ".join(row) + " |")
    add("")
    add("## IOPS and metadata")
    add("")
    add("| workload | " + " | ".join(names) + " |")
    add("|---|" + "---|" * len(names))
    for wl, unit, digits in (("4k randread io_uring qd32", "IOPS", 0), ("stat", "µs per call", 2), ("stat 2 threads", "µs per call", 2),
                             ("create+unlink", "files/s", 0), ("readdir", "ms per listing", 1),
                             ("readdir+stat", "ms per listing with an lstat of each entry", 1)):
        add(f"| {wl} ({unit}) | " + " | ".join(fmt(cfgs[n][wl], digits) for n in names) + " |")
    add("")
    ref = cfgs.get("libfuse io_uring")
    if ref:
        add("## Against libfuse (io_uring)")
        add("")
        add("Each configuration's median over libfuse 3.18 passthrough_hp's (io_uring, `--nopassthrough --nocache`) in this "
            "same run, with the ratio's range (its min over libfuse's max, its max over libfuse's min). Above 1 is better "
            "for throughput, IOPS and files/s; for stat and the listings (times) the ratio is inverted so that above 1 is "
            "better too.")
        add("")
        others = [n for n in names if n not in ("native tmpfs", "libfuse io_uring")]
        add("| workload | " + " | ".join(others) + " |")
        add("|---|" + "---|" * len(others))
        for wl in [w for w, _, _ in WORKLOADS] + ["4k randread io_uring qd32", "stat", "stat 2 threads", "create+unlink", "readdir", "readdir+stat"]:
            row = []
            for n in others:
                v, r = cfgs[n].get(wl, {}), ref.get(wl, {})
                if "median" not in v or "median" not in r or not r["median"] or not v["median"]:
                    row.append("–")
                    continue
                if wl in ("stat", "stat 2 threads", "readdir", "readdir+stat"):  # times: lower is better
                    row.append(f"{r['median'] / v['median']:.2f}× ({r['min'] / v['max']:.2f}–{r['max'] / v['min']:.2f})")
                else:
                    row.append(f"{v['median'] / r['median']:.2f}× ({v['min'] / r['max']:.2f}–{v['max'] / r['min']:.2f})")
            add(f"| {wl} | " + " | ".join(row) + " |")
        add("")
    layer = [(t, f"memtree {t}", f"memfs {t}") for t in ("ring", "dev") if f"memtree {t}" in cfgs and f"memfs {t}" in cfgs]
    if layer:
        add("## The node layer's cost (memtree against memfs)")
        add("")
        add("memtree is memfs's behaviour written on the node layer (the framework keeps ids, names, lookup counts, "
            "attributes and listings); memfs writes all of that itself with raw handlers. Each figure is memtree's median "
            "over memfs's on the same transport in this run, with the ratio's range; above 1 is better (times inverted). "
            "Target: at least 0.90 on every workload.")
        add("")
        add("| workload | " + " | ".join(f"{t}" for t, _, _ in layer) + " |")
        add("|---|" + "---|" * len(layer))
        for wl in [w for w, _, _ in WORKLOADS] + ["4k randread io_uring qd32", "stat", "stat 2 threads", "create+unlink", "readdir", "readdir+stat"]:
            row = []
            for _, tree_name, raw_name in layer:
                v, r = cfgs[tree_name].get(wl, {}), cfgs[raw_name].get(wl, {})
                if "median" not in v or "median" not in r or not r["median"] or not v["median"]:
                    row.append("–")
                elif wl in ("stat", "stat 2 threads", "readdir", "readdir+stat"):
                    row.append(f"{r['median'] / v['median']:.2f}× ({r['min'] / v['max']:.2f}–{r['max'] / v['min']:.2f})")
                else:
                    row.append(f"{v['median'] / r['median']:.2f}× ({v['min'] / r['max']:.2f}–{v['max'] / r['min']:.2f})")
            add(f"| {wl} | " + " | ".join(row) + " |")
        add("")
    slow = results.get("slow")
    if slow and slow["configs"]:
        add("## A slow backing store")
        add("")
        add(f"Each server mirrors the null filesystem with every READ delayed {slow['delay_us']} µs (`nullfs --read-delay-us`), "
            "a stand-in for a slow disk or a remote store. Two fio readers (4 KiB direct random reads, one at a time, one per "
            f"CPU) keep slow reads in flight while {a.slow_stats} stat(2)s of the mount's root, whose GETATTR is not "
            "delayed, measure whether the server still answers other requests: a queue thread that waits in a read holds "
            "every request routed to its queue.")
        add("")
        add("| server | stat µs, idle | stat µs, beside slow reads | slow reads/s |")
        add("|---|---|---|---|")
        for n, v in slow["configs"].items():
            add(f"| {n} | {fmt(v['stat_idle_us'], 1)} | {fmt(v['stat_busy_us'], 1)} | {v['slow_read_iops']:.0f} |")
        add("")
    trace = results.get("trace")
    if trace:
        add("## What recording costs (-d, --stats)")
        add("")
        add(f"The null filesystem's stat(2) on the ring ({a.stats} calls with `-o attr_timeout=0`, so a GETATTR round trip "
            f"each), recording nothing (the default), with `--stats` (counters and latency histograms) and with `-d` (also a "
            f"trace line per request, to a file), in {a.repeat} interleaved rounds:")
        add("")
        add("| recording | µs per stat | × off |")
        add("|---|---|---|")
        off = trace["off"]["median"]
        for n, v in trace.items():
            add(f"| {n} | {fmt(v, 2)} | {v['median'] / off:.2f}× |")
        add("")
    add("## The null filesystem (framework + kernel, no work)")
    add("")
    add("| transport | GETATTR round trips/s | 1 MiB READ, direct, 2 jobs (MiB/s) |")
    add("|---|---|---|")
    for n, v in results["null"].items():
        add(f"| {n} | {fmt(v['getattr_per_s'])} | {fmt(v['read_1m'])} |")
    add("")
    add("## CPU and memory of the servers")
    add("")
    add("CPU per request: the server's user+system time over the whole run of that configuration divided by the requests "
        "the kernel sent it (counted by the fuse:fuse_request_send tracepoint for that connection, the same for every "
        "server; the server's own counters where perf is missing). RSS: right after mounting (idle), at the end of the workloads (busy), and the "
        "peak. Buffers: what the transport allocates for requests (registered, so pinned, on the ring).")
    add("")
    add("| server | requests | CPU µs/request | idle RSS MiB | busy RSS MiB | peak RSS MiB | buffers MiB |")
    add("|---|---|---|---|---|---|---|")
    for n, v in results["servers"].items():
        add(f"| {n} | {v['requests']} | {v['cpu_us_per_request']:.1f} | {v['idle_rss_mib']:.1f} | {v['busy_rss_mib']:.1f} | "
            f"{v['peak_rss_mib']:.1f} | {v['buffers_mib']:.1f} |")
    add("")
    return lines


def chart(a, results):
    cfgs = results["configs"]
    native = cfgs.get("native tmpfs")
    names = [n for n in cfgs if n != "native tmpfs"]
    if not native or not names:
        return None
    data = os.path.join(tempfile.gettempdir(), "corofuse-bench.dat")
    with open(data, "w") as f:
        f.write("workload " + " ".join(f'"{n}"' for n in names) + "\n")
        for wl, _, _ in WORKLOADS:
            f.write(f'"{wl}" ' + " ".join(f"{cfgs[n][wl]['median'] / native[wl]['median']:.3f}" for n in names) + "\n")
    png = os.path.join(a.out, "results.png")
    script = f"""
set terminal pngcairo size 1200,600 noenhanced
set output '{png}'
set title 'Throughput relative to the backing tmpfs (1.0 = kernel-native), median of {a.repeat} runs'
set style data histograms
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set key outside right top
set xtics rotate by -20
plot for [i=2:{len(names) + 1}] '{data}' using i:xtic(1) title columnheader(i)
"""
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    os.unlink(data)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
        return None
    return png


VM_SCRIPT = r"""#!/bin/sh
# In the Linux 7.3 guest: passthrough over the guest's tmpfs in three modes, the fio matrix.
set -u
mkdir -p /tmp/src /tmp/p
for mode in ring pool-copy pool; do
  case $mode in
    ring) args="--transport ring" ;;
    pool-copy) args="--transport pool --zero-copy off" ;;
    pool) args="--transport pool" ;;
  esac
  passthrough /tmp/src /tmp/p $args -d > /tmp/pt-$mode.log 2>&1 &
  pid=$!
  i=0
  until grep -q "serving over" /tmp/pt-$mode.log; do
    i=$((i + 1)); [ $i -le 300 ] || { echo "BENCHFAIL $mode did not start"; cat /tmp/pt-$mode.log; exit 1; }
    sleep 0.1
  done
  for job in 0 1; do
    fio --name=data --rw=write --bs=1M --size=@SIZE@ --numjobs=1 --filename=/tmp/p/data.$job.0 --output-format=terse >/dev/null || exit 1
  done
  for rep in @REPS@; do
    for wl in "read 1" "read 0" "randread 1" "randread 0" "write 1" "write 0"; do
      set -- $wl
      sync; echo 3 > /proc/sys/vm/drop_caches
      if [ $1 = write ]; then name=w; else name=data; fi
      line=$(fio --name=$name --directory=/tmp/p --rw=$1 --bs=1M --direct=$2 --ioengine=sync --numjobs=2 --size=@SIZE@ \
             --group_reporting --output-format=terse --terse-version=3) || { echo "BENCHFAIL fio $mode $wl"; exit 1; }
      echo "BENCH $mode $1 $2 $rep $line"
      rm -f /tmp/p/w.*
    done
  done
  rm -f /tmp/p/data.*
  kill -TERM $pid; wait $pid
  echo "BENCHLOG $mode $(grep -E 'serving over|counter (READ|WRITE|ZERO_COPY)' /tmp/pt-$mode.log | tr '\n' ' ')"
done
echo BENCHDONE
"""


def vm_matrix(a, bins):
    """Issue 6's measurement: passthrough on Linux 7.3 in qemu, 7.42 ring vs pool copy vs pool zero-copy."""
    script = os.path.join(tempfile.gettempdir(), "corofuse-vm-bench.sh")
    with open(script, "w") as f:
        f.write(VM_SCRIPT.replace("@SIZE@", a.vm_size).replace("@REPS@", " ".join(str(i) for i in range(1, a.repeat + 1))))
    cmd = [os.path.join(ROOT, "tools/vm"), "run", "--timeout", "3000", "--mem", "4G",
           "--add", f"{bins['passthrough']}:/usr/local/bin/passthrough", "--add", f"{shutil.which('fio')}:/usr/local/bin/fio",
           "--add", f"{script}:/bench.sh", "--", "sh", "/bench.sh"]
    log("booting Linux 7.3 in qemu (TCG): " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    os.unlink(script)
    if "BENCHDONE" not in r.stdout:
        raise RuntimeError(f"the VM benchmark did not finish (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    runs = {}
    logs = {}
    release = "7.3"
    for line in r.stdout.splitlines():
        if line.startswith("BENCH "):
            parts = line.split(" ", 5)
            mode, rw, direct = parts[1], parts[2], parts[3] == "1"
            fields = parts[5].split(";")
            bw_kib = float(fields[47] if rw == "write" else fields[6])
            wl = f"{rw} {'direct' if direct else 'buffered'}"
            runs.setdefault(wl, {}).setdefault(mode, []).append(bw_kib / 1024.0)
        elif line.startswith("BENCHLOG "):
            mode, text = line[9:].split(" ", 1)
            logs[mode] = text
    m = re.search(r"Linux (\S+)", r.stderr + r.stdout)
    if m:
        release = m.group(1).rstrip(",)")
    return {"release": release, "runs": {wl: {mode: summarize(v) for mode, v in modes.items()} for wl, modes in runs.items()},
            "logs": logs}


def write_vm_report(a, vm):
    lines = ["# corofuse on Linux 7.3: the 7.42 ring, buffer pools, zero-copy", ""]
    add = lines.append
    add(f"Measured {datetime.date.today()} by `bench/run --vm`: Debian's Linux {vm['release']} in qemu with software "
        "emulation (TCG, 2 vCPUs; KVM cannot run this kernel here), passthrough over the guest's tmpfs, fio "
        f"`--ioengine=sync --bs=1M --numjobs=2 --size={a.vm_size}` per job, caches dropped before each run, median of "
        f"{a.repeat} runs (min–max). Under emulation I/O is 10-50 times slower than on the host: only the ratios between "
        "the modes of this one boot mean anything. fio could go into the initramfs (the harness adds the libraries ldd "
        "names), so these are fio's own figures.")
    add("")
    add("| workload | 7.42 ring (MiB/s) | pool, copy (MiB/s) | pool, zero-copy (MiB/s) | zero-copy / copy | zero-copy / 7.42 ring |")
    add("|---|---|---|---|---|---|")
    for wl, modes in vm["runs"].items():
        ring, copy, zc = modes.get("ring"), modes.get("pool-copy"), modes.get("pool")
        if not (ring and copy and zc):
            continue
        add(f"| {wl} | {fmt(ring)} | {fmt(copy)} | {fmt(zc)} | **{zc['median'] / copy['median']:.2f}×** | "
            f"{zc['median'] / ring['median']:.2f}× |")
    add("")
    add("What each server said (its mode line and counters at exit):")
    add("")
    for mode, text in vm["logs"].items():
        add(f"- `{mode}`: `{text.strip()}`")
    add("")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="runs per figure (median, min, max); default 3")
    p.add_argument("--size", default="1G", help="fio file size per job (default 1G)")
    p.add_argument("--runtime", type=int, default=5, help="seconds of the 4 KiB io_uring run (default 5)")
    p.add_argument("--stats", type=int, default=20000, help="stat calls (default 20000)")
    p.add_argument("--files", type=int, default=20000, help="files created and unlinked (default 20000)")
    p.add_argument("--entries", type=int, default=10000, help="entries of the listed directory (default 10000)")
    p.add_argument("--only", nargs="*", help="configurations to run besides native tmpfs, e.g. 'memfs ring'")
    p.add_argument("--perf", action="store_true",
                   help="also profile with perf into bench/perf/: nullfs (GETATTR, 1 MiB READ), and passthrough over the "
                        "ring and libfuse io_uring (4 KiB random reads, stat), each on a mount of its own")
    p.add_argument("--slow-delay-us", type=int, default=2000,
                   help="the slow backing store's delay per READ in µs (default 2000; 0 leaves that part out)")
    p.add_argument("--slow-stats", type=int, default=2000, help="stat calls per slow-backing figure (default 2000)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench"), help="where RESULTS.md, results.json and results.png go")
    p.add_argument("--vm", action="store_true",
                   help="instead: passthrough on Linux 7.3 in qemu (tools/vm), 7.42 ring vs pool copy vs pool zero-copy, "
                        "into RESULTS-7.3.md")
    p.add_argument("--vm-size", default="256M", help="fio file size per job in the VM (default 256M)")
    p.add_argument("--no-libfuse", dest="libfuse", action="store_false",
                   help="leave out the competitor, libfuse 3.18's passthrough_hp (built from Debian's fuse3 source)")
    p.add_argument("--baseline", help="a directory with memfs and passthrough binaries of an earlier version (e.g. copied from "
                                      "bazel-bin of a checkout of it): each server configuration runs again with them, "
                                      "labelled 'before', in the same run")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it mounts tmpfs and FUSE filesystems)")
    for tool in ("fio", "bazel") + (() if a.vm else ("gnuplot",)):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (apt-get install fio gnuplot-nox; bazel: tools/setup)")
    if a.perf and not shutil.which("perf"):
        sys.exit("bench: perf is missing (apt-get install linux-perf)")
    log("building optimised binaries (bazel build --config=opt)")
    bins = build(a)
    if not a.vm:
        bins["libfuse"], why = build_libfuse(a)
        if why:
            bins["libfuse_why"] = why
            log(f"libfuse is skipped: {why}")
    if a.baseline:
        for kind in ("memfs", "passthrough"):
            path = os.path.join(a.baseline, kind)
            if not os.access(path, os.X_OK):
                sys.exit(f"bench: --baseline {a.baseline}: no executable {kind} there")
            bins[kind + "@before"] = path
    if a.vm:
        vm = vm_matrix(a, bins)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results-7.3.json"), "w") as f:
            json.dump(vm, f, indent=1)
        with open(os.path.join(a.out, "RESULTS-7.3.md"), "w") as f:
            f.write("\n".join(write_vm_report(a, vm)) + "\n")
        log(f"wrote {os.path.join(a.out, 'RESULTS-7.3.md')}")
        return
    results = host_matrix(a, bins)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = write_report(a, results, bins)
    png = chart(a, results)
    if png:
        lines += ["![throughput relative to the backing tmpfs](results.png)", ""]
    notes = os.path.join(a.out, "NOTES.md")
    if os.path.exists(notes):  # hand-written analysis (profiles, where the time goes) follows the tables
        with open(notes) as f:
            lines += [f.read()]
    with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {os.path.join(a.out, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
