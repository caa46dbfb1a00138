"""Throughput and kill-and-resume of `vp run-llm` against the loopback fake endpoint.

1. Starts ``tests/llm_server.py`` in its own process with 50 ms latency per answer and runs
   the runner (in this process) at concurrency 32 over ~2,000 questions. The ideal rate is
   concurrency / latency = 640 questions/s; prints the achieved rate and the ratio
   (target >= 0.8), and the runner's CPU per question (aim <= 0.5 ms). Then the same again
   with ``--busy`` processes spinning on the CPU (default: one per core), so "also when the
   machine is busy" is measured on a quiet machine too.
2. Starts ``vp run-llm`` as a subprocess on a fresh bank, SIGKILLs it midway, starts it
   again to completion and counts, at the server, how many questions that were already in
   the cache at the kill were asked again (target 0). Questions in flight at the kill
   (asked, never stored) are asked again by design and are reported separately.

Run: ``.venv/bin/python benchmarks/llm_throughput.py [--items 334] [--latency 0.05] [--concurrency 32]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import question_key  # noqa: E402

from analysis.llm.bank import parse_bank  # noqa: E402
from analysis.llm.client import OpenAIBackend  # noqa: E402
from analysis.llm.prompts import load_prompts  # noqa: E402
from analysis.llm.runner import build_questions, run_llm  # noqa: E402


def synthetic_bank(n_items: int, tag: str) -> list[dict]:
    """``n_items`` items (5 responses per query), texts unique per ``tag``."""
    bank = []
    for q in range(-(-n_items // 5)):
        pid = (1000 if q % 2 == 0 else 3000) + q
        outputs = [{"id": j, "content": f"[{tag}] response {j} to query {pid}: one view on the matter.",
                    "keyed": {"pvq": ["Benevolence"]}} for j in range(1, 6)]
        bank.append({"portrait_id": str(pid),
                     "content": {"title": f"[{tag}] question {pid}" if pid < 3000 else None,
                                 "text": f"[{tag}] the body of query {pid}, asking for advice."},
                     "outputs": outputs})
    # trim to exactly n_items
    extra = 5 * len(bank) - n_items
    if extra:
        bank[-1]["outputs"] = bank[-1]["outputs"][: 5 - extra]
    return bank


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"http://127.0.0.1:{port}/v1"


def server_requests(base_url: str) -> dict[str, int]:
    stats = httpx.get(base_url.replace("/v1", "/stats"), timeout=30).json()
    return {k: v["requests"] for k, v in stats["questions"].items()}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(base_url: str, n_items: int, concurrency: int, latency: float, work: Path, server_pid: int,
               tag: str = "throughput") -> None:
    items = parse_bank(synthetic_bank(n_items, tag))
    backend = OpenAIBackend(base_url, "bench-model", concurrency=concurrency, timeout=30)
    start, cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu_seconds(server_pid)
    stats, _ = run_llm(items, backend, "bench-model", out_dir=work / tag, concurrency=concurrency, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    server_cpu = _cpu_seconds(server_pid) - server_cpu
    ideal = concurrency / latency
    print(f"{tag}: {stats.asked} questions at concurrency {concurrency}, latency {latency * 1000:.0f} ms: "
          f"{stats.rate:.0f}/s while asking ({wall:.2f} s wall incl. setup and output); "
          f"ideal {ideal:.0f}/s; ratio {stats.rate / ideal:.2f} (target >= 0.80)")
    # Independent of other load on the machine: the runner's CPU per question, against the
    # budget one core has at the ideal rate.
    print(f"runner CPU: {cpu / stats.asked * 1000:.2f} ms per question, all of run_llm (aim <= 0.5 ms; one core's budget "
          f"at {ideal:.0f}/s: {1000 / ideal:.2f} ms); the fake server's: {server_cpu / stats.asked * 1000:.2f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def kill_and_resume(base_url: str, n_items: int, concurrency: int, work: Path) -> None:
    bank = synthetic_bank(n_items, "resume")
    bank_path = work / "bank_resume.json"
    bank_path.write_text(json.dumps(bank))
    out = work / "r"
    cache = out / "llm_cache.sqlite"
    cmd = [str(Path(sys.executable).with_name("vp")), "run-llm", "--base-url", base_url, "--model", "bench-resume",
           "--item-bank", str(bank_path), "--out", str(out), "--concurrency", str(concurrency), "--no-progress"]
    total = n_items * 6
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once roughly half the questions are stored.
    deadline = time.time() + 60
    stored = 0
    while time.time() < deadline:
        time.sleep(0.05)
        if cache.exists():
            try:
                with sqlite3.connect(cache, timeout=5) as conn:
                    stored = conn.execute("SELECT count(*) FROM answers").fetchone()[0]
            except sqlite3.Error:
                continue
            if stored >= total // 2:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(cache) as conn:
        done = {tuple(r) for r in conn.execute(
            "SELECT model, persona, portrait_id, option_id, variant, prompt_hash FROM answers")}
    settings = OpenAIBackend(base_url, "bench-resume").settings()
    questions = build_questions(parse_bank(bank), load_prompts(), "bench-resume", None, settings)
    server_key = {q.key: question_key(q.messages) for q in questions}
    before = server_requests(base_url)
    asked_before = {k for k in before if k in set(server_key.values())}
    status = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).returncode
    after = server_requests(base_url)
    done_server = {server_key[k] for k in done}
    repeated = sum(1 for k in done_server if after.get(k, 0) > before.get(k, 0))
    in_flight = asked_before - done_server
    reasked_in_flight = sum(1 for k in in_flight if after.get(k, 0) > before.get(k, 0))
    final = json.loads((out / "bench-resume.json").read_text())
    complete = sum(1 for r in final for v in r["version_responses"].values() if v is not None)
    print(f"kill-and-resume: killed with {len(done)} of {total} answers stored; resumed (exit {status}); "
          f"completed questions asked again: {repeated} (target 0); "
          f"in flight at the kill and asked again: {reasked_in_flight} of {len(in_flight)}; "
          f"answers in the final output: {complete} of {total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=334, help="items (x 6 variants = questions)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--busy", type=int, default=os.cpu_count(),
                        help="processes spinning on the CPU during the second throughput run (0: no second run)")
    args = parser.parse_args()
    proc, base_url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            throughput(base_url, args.items, args.concurrency, args.latency, work, proc.pid)
            if args.busy:
                spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
                try:
                    time.sleep(1.0)  # let the load settle in
                    throughput(base_url, args.items, args.concurrency, args.latency, work, proc.pid,
                               tag=f"throughput with {args.busy} busy processes")
                finally:
                    for spinner in spinners:
                        spinner.kill()
                        spinner.wait()
            kill_and_resume(base_url, args.items, args.concurrency, work)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
