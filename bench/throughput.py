"""Build throughput against the emulator: is pixmake's executor ever the bottleneck?

For N targets (default 1,000 and 10,000) at emulator latency L and concurrency C, prints:

* wall time beside the bound ``max(N·L/C, N/rate)`` (bar: wall ≤ 1.1 × bound);
* client CPU per target (and its user/system split) beside the CPU Pillow alone spends decoding the same
  images (bar: the difference ≤ 2 ms, and the same at 10,000 as at 1,000: no quadratic step);
* status polls per task; uploads per distinct local file (bar: 1); peak RSS of the client (bar: flat in N),
  and its peak once the manifest is loaded. With two or more N, the RSS each extra target costs is
  printed beside what ninja (when on PATH) costs per extra edge for the same target names, inputs and
  prompts in a dry run (``ninja -n``): a build tool that holds its graph grows with it;
* after each N's lines, a plain aiohttp loop's CPU per target (user/system), Pillow, beyond and polls per
  task (medians with ``--repeat``): what a user writes instead of pixmake, with the same HTTP requests, a
  Pillow decode and an atomic, fsync'd write per target; then pixmake's beyond over the loop's, and minus
  it. The bar is absolute; the loop shows the floor the HTTP client alone sets on this machine, so the
  difference is what pixmake's guarantees (journal, lock, object cache, retries) cost. With two or more N,
  the loop's CPU per extra target is printed too.

Layout: the emulator runs in its own process (rate limits off, latency L, no jitter), so its CPU (serving,
rendering 1024² PNGs) is not counted as the client's; each N is built by a fresh client process, so its
peak RSS is its own. Every target shares one local reference (uploaded once) and has its own URL reference
(so every key differs); every prompt differs too, so the emulator renders every image (about 2 ms each).
The plain loop runs in a fresh process too, right after pixmake's client (each repeat), against the same
emulator after the same reset.

The poll interval is set 1 % above L, as the documented pace (first poll after about the typical
latency) would be for the real API; polls per task show what that costs.

Usage: ``PYTHONPATH=src python bench/throughput.py [--n 1000 10000] [--latency 1.0] [--concurrency 64]
[--rate 100] [--repeat 1] [--dir DIR]``. CPU figures on a shared VM move from run to run: ``--repeat 3``
prints each run and their median.

The projects are written under ``--dir`` (default: the system's temp directory), and the first line names
its file system. System time depends on it: ext4 without a journal (as on some VMs) checks every new
inode against recently deleted ones, which made each file creation cost up to 0.8 ms here; on a
journaled ext4 it costs about 20 µs.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["main"]


def _serve(latency: float) -> None:
    """Child process: run the emulator until stdin closes; print its URL first."""
    from pixmake.emulator import EmulatorConfig, EmulatorServer

    config = EmulatorConfig(latency=latency, submit_rps=None, query_rps=None, queued_fraction=0.2)
    with EmulatorServer(config) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def _target(i: int) -> tuple[str, str]:
    """Target ``i``'s prompt and its own URL reference (the manifest, ninja's edges and the plain loop)."""
    return f"catalogue shot {i} of a blue mug", f"https://assets.example.com/unique/{i}.png"


def _brand(root: Path) -> None:
    """Write the local reference every target shares: ``refs/brand.png``."""
    from PIL import Image

    (root / "refs").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (20, 90, 160)).save(root / "refs" / "brand.png")


def _manifest(root: Path, count: int, concurrency: int, rate: float) -> None:
    _brand(root)
    targets = {
        f"t{i:05d}": {
            "prompt": _target(i)[0],
            "references": [_target(i)[1], "refs/brand.png"],
            "out": f"out/t{i:05d}.png",
        }
        for i in range(count)
    }
    document = {
        "version": 1,
        "provider": {"concurrency": concurrency, "rate": f"{rate:g}/s"},
        "defaults": {"model": "gpt-4o-image", "size": "1:1", "n": 1},
        "targets": targets,
    }
    (root / "pixmake.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _pillow_seconds(paths: list[Path]) -> float:
    """CPU seconds Pillow alone spends decoding these images (as the executor's verify does)."""
    import io

    from PIL import Image

    seconds = 0.0
    for path in paths:
        blob = path.read_bytes()
        started = time.process_time()
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
        seconds += time.process_time() - started
    return seconds


def _peak_rss_mb() -> float:
    """This process's peak RSS since it started its program (Linux: VmHWM).

    Not ``ru_maxrss``: that also counts the parent's memory, which a child holds between fork and exec,
    so a child never reads below the bench's own RSS (about 40 MB).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def _client(url: str, root: Path, count: int, latency: float) -> dict[str, Any]:
    """Child process: build the ``count`` targets of the project at ``root`` against ``url``; return the figures."""
    from pixmake import api
    from pixmake.settings import resolve

    # The parent wrote the project, so generating its YAML does not count towards this process's RSS.
    project = api.open_project(root)
    environ = {"PIXMAKE_BASE_URL": url, "TOAPIS_API_KEY": "sk-bench", "PIXMAKE_POLL_INTERVAL": f"{latency * 1.01}"}
    cpu, wall, usage = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    manifest = api.load_manifest(project)  # as `pixmake build` does: validated once, through the manifest cache
    load_rss_mb = _peak_rss_mb()
    settings = dataclasses.replace(resolve(manifest.provider, environ), query_rate=100_000.0)
    result = api.build(project, settings, manifest=manifest)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    assert result.ok and len(result.generated) == count, result.failed[:3]
    rss_mb = _peak_rss_mb()  # before measuring Pillow alone
    pillow = _pillow_seconds(sorted((root / "out").glob("*.png")))
    stats = result.statistics
    return {
        "n": count,
        "wall": wall,
        "cpu": cpu,
        "user": user,
        "sys": system,
        "pillow": pillow,
        "polls_per_task": stats.polls / max(1, stats.submits),
        "uploads": stats.uploads,
        "distinct_uploads": stats.distinct_uploads,
        "retries": stats.retries,
        "rss_mb": rss_mb,
        "load_rss_mb": load_rss_mb,
    }


def _plain(url: str, root: Path, count: int, latency: float, concurrency: int) -> dict[str, Any]:
    """Child process: what a user writes instead of pixmake, a bare aiohttp loop; return the figures.

    The same HTTP work per target as pixmake's client (submit, status polls at the same pace, one result
    file; the shared reference uploaded once) and the least disk work a script that must not lose a paid
    image does (a temporary file, fsync, ``os.replace``). It must not import pixmake.
    """
    cpu, wall, usage = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    # Imported inside the measured window: pixmake's client imports aiohttp, uvloop and Pillow inside its own.
    import asyncio
    import io

    import aiohttp
    from PIL import Image

    interval = latency * 1.01
    out = root / "out"
    out.mkdir(exist_ok=True)
    pillow, polls = 0.0, 0

    def save(name: str, blob: bytes) -> None:
        temp = out / f".{name}.tmp"
        with temp.open("wb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, out / name)

    async def one(
        i: int, api: aiohttp.ClientSession, files: aiohttp.ClientSession, brand: str, gate: asyncio.Semaphore
    ) -> None:
        nonlocal pillow, polls
        prompt, reference = _target(i)
        body = {
            "model": "gpt-4o-image",
            "prompt": prompt,
            "size": "1:1",
            "n": 1,
            "client_business_id": f"plain-{i}",
            "image_urls": [reference, brand],
        }
        async with gate:
            async with api.post(f"{url}/v1/images/generations", json=body) as response:
                response.raise_for_status()
                task = await response.json()
            while task["status"] != "completed":
                assert task["status"] != "failed", task
                await asyncio.sleep(interval)
                polls += 1
                async with api.get(f"{url}/v1/images/generations/{task['id']}") as response:
                    response.raise_for_status()
                    task = await response.json()
            async with files.get(task["result"]["data"][0]["url"]) as response:
                response.raise_for_status()
                blob = await response.read()
            started = time.process_time()  # this thread only runs the decode meanwhile
            with Image.open(io.BytesIO(blob)) as image:
                image.load()
            pillow += time.process_time() - started
            # Decoded and written on the event loop, as a plain script does (pixmake does both in worker threads).
            save(f"t{i:05d}.png", blob)

    async def run() -> None:
        headers = {"Authorization": "Bearer sk-bench"}
        async with aiohttp.ClientSession(headers=headers) as api, aiohttp.ClientSession() as files:
            form = aiohttp.FormData()
            form.add_field("file", (root / "refs" / "brand.png").read_bytes(), filename="brand.png")
            form.add_field("purpose", "generation")
            async with api.post(f"{url}/v1/uploads/images", data=form) as response:
                response.raise_for_status()
                brand = (await response.json())["data"]["url"]
            # No submit pacing (pixmake's `rate`): the emulator's limits are off, and the loop's CPU is the point.
            gate = asyncio.Semaphore(concurrency)
            await asyncio.gather(*(one(i, api, files, brand, gate) for i in range(count)))

    try:  # uvloop where it exists, as pixmake runs
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert len(list(out.glob("t*.png"))) == count
    return {
        "n": count,
        "wall": wall,
        "cpu": cpu,
        "user": after.ru_utime - usage.ru_utime,
        "sys": after.ru_stime - usage.ru_stime,
        "pillow": pillow,
        "polls_per_task": polls / count,
        "rss_mb": _peak_rss_mb(),
    }


def _ninja_rss_mb(root: Path, count: int) -> float | None:
    """Peak RSS of ``ninja -n`` over ``count`` edges shaped like the bench's targets; None without ninja.

    Run under GNU ``time``: a child of this process would count this process's RSS too (see :func:`_peak_rss_mb`).
    """
    ninja, gnu_time = shutil.which("ninja"), shutil.which("time")
    if ninja is None or gnu_time is None:
        return None
    lines = ["rule gen\n  command = generate $prompt $url > $out\n"]
    lines += [
        f"build out/t{i:05d}.png: gen refs/brand.png\n  prompt = {_target(i)[0]}\n  url = {_target(i)[1]}\n"
        for i in range(count)
    ]
    (root / "build.ninja").write_text("".join(lines))
    command = [gnu_time, "-f", "%M", ninja, "-n", "-C", str(root)]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = done.stderr.strip().splitlines()[-1:] if done.returncode == 0 else []
    return int(last[0]) / 1024 if last and last[0].isdigit() else None


def _file_system(directory: Path) -> str:
    """The type and mount options of the file system holding ``directory`` (Linux; elsewhere "unknown")."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    where = os.path.realpath(directory)
    inside = [m for m in mounts if len(m) >= 4 and (where + "/").startswith(m[1].rstrip("/") + "/")]
    if not inside:
        return "unknown"
    device, mount_point, kind, options = max(inside, key=lambda m: len(m[1]))[:4]
    if kind == "ext4":  # the kernel lists each mounted journal in /proc/fs/jbd2 as <device>-<inode>
        journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
        journaled = any(name.startswith(os.path.basename(device) + "-") for name in journals)
        kind += ", journaled" if journaled else ", no journal"
    return f"{kind} at {mount_point} ({options})"


def _measure(
    me: list[str], env: dict[str, str], url: str, count: int, args: argparse.Namespace, *, plain: bool = False
) -> dict[str, Any]:
    """One fresh client process building ``count`` targets against a reset emulator; its figures.

    ``plain``: the plain aiohttp loop instead of pixmake (its project is only the shared reference).
    """
    httpx.post(f"{url}/_emulator/reset", json={"latency": args.latency, "submit_rps": None, "query_rps": None})
    with tempfile.TemporaryDirectory(prefix="pixmake-bench-", dir=args.dir) as directory:
        if plain:
            _brand(Path(directory))
        else:
            _manifest(Path(directory), count, args.concurrency, args.rate)
        os.sync()  # the last run's files and this setup's reach the disk now, not during the measured run
        mode = ["--plain", url, "--concurrency", str(args.concurrency)] if plain else ["--client", url]
        command = [*me, *mode, "--root", directory, "--n", str(count)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(done.returncode)
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if not plain:
            figures["ninja_rss_mb"] = _ninja_rss_mb(Path(directory), count)
    return figures


def _line(count: int, f: dict[str, Any], args: argparse.Namespace, label: str = "") -> str:
    bound = max(count * args.latency / args.concurrency, count / args.rate)
    per = 1000.0 * f["cpu"] / count
    pillow = 1000.0 * f["pillow"] / count
    return (
        f"{count:>6} {f['wall']:>8.1f} {bound:>8.1f} {f['wall'] / bound:>6.2f} {per:>9.2f} "
        f"{1000.0 * f['user'] / count:>6.2f} {1000.0 * f['sys'] / count:>5.2f} {pillow:>7.2f} "
        f"{per - pillow:>7.2f} {f['polls_per_task']:>8.2f} "
        f"{f['uploads'] / max(1, f['distinct_uploads']):>8.1f} {f['retries']:>8} {f['rss_mb']:>7.0f} "
        f"{f['load_rss_mb']:>7.0f} {label}"
    ).rstrip()


def _plain_line(count: int, plain: dict[str, Any], pixmake: dict[str, Any], label: str) -> str:
    """The plain loop's CPU figures beside pixmake's ``beyond`` (both per target, in ms), and its polls per
    task (its HTTP work is pixmake's only if they match)."""
    per, pillow = 1000.0 * plain["cpu"] / count, 1000.0 * plain["pillow"] / count
    beyond = per - pillow
    # Beyond against beyond: each side's own Pillow time is taken out, so its run-to-run noise is too.
    ours = 1000.0 * (pixmake["cpu"] - pixmake["pillow"]) / count
    ratio = f"{ours / beyond:.1f}x" if beyond > 0 else "n/a"
    return (
        f"  plain aiohttp loop{label}: cpu {per:.2f} ms/t (user {1000.0 * plain['user'] / count:.2f} "
        f"sys {1000.0 * plain['sys'] / count:.2f}), pillow {pillow:.2f}, beyond {beyond:.2f}, "
        f"polls/t {plain['polls_per_task']:.2f}; "
        f"pixmake beyond / plain beyond {ratio}, pixmake − plain {ours - beyond:.2f} ms/t"
    )


def _cpu_step(typical: dict[int, dict[str, Any]]) -> tuple[int, int, float, float, float]:
    """Smallest and largest N, CPU and Pillow ms per extra target between them, and the fixed CPU seconds."""
    small, large = min(typical), max(typical)
    a, b = typical[small], typical[large]
    per = 1000.0 * (b["cpu"] - a["cpu"]) / (large - small)
    pillow = 1000.0 * (b["pillow"] - a["pillow"]) / (large - small)
    return small, large, per, pillow, a["cpu"] - per / 1000.0 * small


def _marginal(typical: dict[int, dict[str, Any]]) -> str:
    """CPU per extra target between the smallest and largest N, and the fixed cost (imports, start-up) left.

    Per target figures divide the fixed cost by N; this one does not, so it is the same at any N if
    nothing grows faster than N.
    """
    small, large, per, pillow, fixed = _cpu_step(typical)
    a, b = typical[small], typical[large]
    rss = 1024.0 * (b["rss_mb"] - a["rss_mb"]) / (large - small)
    load = 1024.0 * (b["load_rss_mb"] - a["load_rss_mb"]) / (large - small)
    ninja = ""
    if a["ninja_rss_mb"] is not None and b["ninja_rss_mb"] is not None:
        ninja = f"; ninja -n {1024.0 * (b['ninja_rss_mb'] - a['ninja_rss_mb']) / (large - small):.2f} KB per extra edge"
    return (
        f"from N={small} to N={large}: {per:.2f} ms CPU per extra target "
        f"(Pillow {pillow:.2f}, beyond {per - pillow:.2f}); fixed cost {fixed:.2f} s\n"
        f"from N={small} to N={large}: {rss:.2f} KB peak RSS per extra target (at load {load:.2f}){ninja}"
    )


def _plain_marginal(plain: dict[int, dict[str, Any]]) -> str:
    """The plain loop's CPU per extra target, as :func:`_marginal` gives pixmake's: its start-up left out."""
    small, large, per, pillow, fixed = _cpu_step(plain)
    return (
        f"from N={small} to N={large}: plain aiohttp loop {per:.2f} ms CPU per extra target "
        f"(Pillow {pillow:.2f}, beyond {per - pillow:.2f}); fixed cost {fixed:.2f} s"
    )


def _median(values: list[Any]) -> Any:
    """The median of figures that may be missing (None: no ninja), None when one is."""
    return None if None in values else statistics.median(values)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per N."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--latency", type=float, default=1.0, help="emulator seconds from submit to completed")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0, help="submits per second")
    parser.add_argument("--repeat", type=int, default=1, help="client runs per N; with more than 1, a median line too")
    parser.add_argument("--dir", type=Path, help="where the projects are written (default: the system temp directory)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--plain", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.latency)
        return
    if args.client:
        figures = _client(args.client, args.root, args.n[0], args.latency)
        print(json.dumps(figures))
        return
    if args.plain:
        print(json.dumps(_plain(args.plain, args.root, args.n[0], args.latency, args.concurrency)))
        return

    src = Path(__file__).parent.parent / "src"
    # pip compiles an installed package's modules at install. Run from src/ with PYTHONDONTWRITEBYTECODE
    # set, every client would compile each module edited since its last .pyc inside the measured window.
    compileall.compile_dir(src / "pixmake", quiet=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *sys.path])}
    me = [sys.executable, __file__, "--latency", str(args.latency)]
    server = subprocess.Popen([*me, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    httpx.get(f"{url}/_emulator/config").raise_for_status()
    print(f"emulator {url}: latency {args.latency} s; client: concurrency {args.concurrency}, rate {args.rate:g}/s")
    projects = args.dir or Path(tempfile.gettempdir())
    print(f"projects in {projects}: {_file_system(projects)}")
    header = (
        f"{'N':>6} {'wall s':>8} {'bound s':>8} {'ratio':>6} {'cpu ms/t':>9} {'(user':>6} {'sys)':>5} "
        f"{'pillow':>7} {'beyond':>7} "
        f"{'polls/t':>8} {'up/file':>8} {'retries':>8} {'RSS MB':>7} {'(load)':>7}"
    )
    print(header)
    typical: dict[int, dict[str, Any]] = {}
    plain: dict[int, dict[str, Any]] = {}
    try:
        for count in args.n:
            runs: list[dict[str, Any]] = []
            plains: list[dict[str, Any]] = []
            for _ in range(args.repeat):  # interleaved: a slow spell of this VM weighs on both alike
                runs.append(_measure(me, env, url, count, args))
                plains.append(_measure(me, env, url, count, args, plain=True))
            for figures in runs:
                print(_line(count, figures, args))
            typical[count] = {k: _median([r[k] for r in runs]) for k in runs[0] if k != "n"}
            if args.repeat > 1:  # this VM's CPU figures move by ±0.5 ms/target from run to run
                print(_line(count, typical[count], args, label="median"))
            plain[count] = {k: statistics.median([r[k] for r in plains]) for k in plains[0] if k != "n"}
            label = f" (median of {args.repeat})" if args.repeat > 1 else ""
            print(_plain_line(count, plain[count], typical[count], label))
        if len(typical) > 1:
            print(_marginal(typical))
            print(_plain_marginal(plain))
    finally:
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
